// App-side helper for Node.js: read a secret the way Swarm and devsecrets deliver it.
// Copy it into your application. readSecret("db_password") returns a Buffer with the bytes of
// $DB_PASSWORD_FILE if that variable is set, else of /run/secrets/db_password.
// The same code runs unchanged on a laptop (`devsecrets up`, `devsecrets run`) and on a swarm.
"use strict";
const fs = require("fs");

function fileVariable(name) {
  return name.replace(/[^A-Za-z0-9]/g, "_").toUpperCase() + "_FILE";
}

function readSecret(name, { stripNewline = false } = {}) {
  const path = process.env[fileVariable(name)] || `/run/secrets/${name}`;
  const value = fs.readFileSync(path);
  if (stripNewline && value.length && value[value.length - 1] === 0x0a) {
    return value.subarray(0, value.length - 1);
  }
  return value;
}

module.exports = { readSecret, fileVariable };
