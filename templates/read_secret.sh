#!/bin/sh
# App-side helper for shell entrypoints: export VAR from $VAR_FILE, the *_FILE convention
# many official images use, so a secret can stay in /run/secrets instead of the environment.
# Usage in an entrypoint:  . /read_secret.sh; file_env DB_PASSWORD
file_env() {
  var="$1"
  eval "file=\${${var}_FILE:-/run/secrets/$(echo "$var" | tr 'A-Z' 'a-z')}"
  if [ -r "$file" ]; then
    eval "export $var=\"\$(cat \"\$file\")\""
  fi
}
