#!/usr/bin/env node
// Validates Akash SDL files offline with Akash's own SDL library.
//   node deploy/validate/validate-sdl.mjs akash/deploy.rendered.yaml
//   node deploy/validate/validate-sdl.mjs --expect-invalid broken.yaml   (exit 0 only if rejected)
import { readFileSync } from "node:fs";
import { sdlErrors } from "./lib/sdl.mjs";

const args = process.argv.slice(2);
const expectInvalid = args[0] === "--expect-invalid";
const files = expectInvalid ? args.slice(1) : args;
if (files.length === 0) {
  console.error("usage: validate-sdl.mjs [--expect-invalid] FILE...");
  process.exit(2);
}

let failed = false;
for (const file of files) {
  const errors = sdlErrors(readFileSync(file, "utf8"));
  if (expectInvalid) {
    if (errors.length === 0) {
      console.error(`${file}: accepted, but it is broken and must be rejected`);
      failed = true;
    } else {
      console.log(`${file}: rejected as expected: ${errors[0]}`);
    }
  } else if (errors.length > 0) {
    console.error(`${file}: invalid SDL:\n  ${errors.join("\n  ")}`);
    failed = true;
  } else {
    console.log(`${file}: valid SDL`);
  }
}
process.exit(failed ? 1 : 0);
