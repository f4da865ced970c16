// Akash SDL validation with Akash's own SDL library (@akashnetwork/chain-sdk), offline.
import yaml from "js-yaml";
import { SDL, generateManifest } from "@akashnetwork/chain-sdk";

// The network whose rules apply (mainnet, sandbox or testnet): mainnet, where users deploy.
export const NETWORK = "mainnet";

function describe(error) {
  if (typeof error === "string") return error;
  const where = error.instancePath ? ` (at ${error.instancePath})` : "";
  return `${error.message ?? JSON.stringify(error)}${where}`;
}

/**
 * Every problem Akash's library finds in an SDL document (YAML text); empty when valid.
 * Two entry points of the library are used, as the deploy tools do: generateManifest (the
 * current API: JSON schema plus manifest and group generation) and the SDL class (the one
 * provider-services and Console have long used, with its own cross-reference checks).
 */
export function sdlErrors(text) {
  let doc;
  try {
    doc = yaml.load(text);
  } catch (e) {
    return [`not YAML: ${e.message}`];
  }
  const errors = [];
  try {
    const result = generateManifest(doc, NETWORK);
    if (!result.ok) errors.push(...result.value.map((e) => `generateManifest: ${describe(e)}`));
  } catch (e) {
    errors.push(`generateManifest: ${e.message}`);
  }
  try {
    const sdl = SDL.fromString(text, "beta3", NETWORK);
    sdl.manifest();
    sdl.groups();
  } catch (e) {
    errors.push(`SDL: ${e.message}`);
  }
  return errors;
}
