#!/usr/bin/env bash
# Re-creates the demo stores of examples/tls, basic-auth and rotation from scratch: a new
# THROWAWAY age key per example (demo-age-key.txt, committed on purpose, worthless) and
# freshly generated values. Run from the repository root: bash examples/make-demo-stores.sh
set -euo pipefail
cd "$(dirname "$0")"
devsecrets() { python3 -m devsecrets "$@"; }
scratch=$(mktemp -d /dev/shm/devsecrets-demo-XXXXXX) # TLS key material never touches disk
trap 'rm -rf "$scratch"' EXIT

new_store() { # example directory
  local dir=$1
  rm -rf "$dir/.devsecrets" "$dir/demo-age-key.txt"
  python3 - "$dir/demo-age-key.txt" "$dir" <<'PY'
import sys
from pathlib import Path
from devsecrets.keys import create_key_file
path = Path(sys.argv[1])
create_key_file(path, "demo")
path.write_text(
    f"# THROWAWAY demo key for examples/{Path(sys.argv[2]).name} only: it is public, in git.\n"
    "# Never use it for real secrets.\n" + path.read_text()
)
path.chmod(0o644)  # public on purpose
PY
  (cd "$dir" && SOPS_AGE_KEY_FILE=demo-age-key.txt devsecrets --store .devsecrets init --name demo)
}

set_in() { # example directory, then devsecrets set arguments
  local dir=$1
  shift
  (cd "$dir" && SOPS_AGE_KEY_FILE=demo-age-key.txt devsecrets --store .devsecrets set "$@")
}

new_store tls
set_in tls db_password --generate --length 28
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$scratch/key.pem" -out "$scratch/cert.pem" 2>/dev/null
set_in tls tls_key --from-file "$scratch/key.pem"
set_in tls tls_cert --from-file "$scratch/cert.pem"

new_store basic-auth
set_in basic-auth basic_auth_password --generate --length 20
(cd basic-auth && SOPS_AGE_KEY_FILE=demo-age-key.txt devsecrets --store .devsecrets get basic_auth_password) \
  | openssl passwd -apr1 -stdin | sed 's/^/demo:/' >"$scratch/htpasswd"
set_in basic-auth htpasswd --from-file "$scratch/htpasswd"

new_store rotation
set_in rotation db_password_v1 --generate --length 20
set_in rotation db_password_v2 --generate --length 28
