#!/usr/bin/env node
// The deployment checks CI runs (scripts/check-deploy.sh):
//   1. akash/render.sh renders the SDL from sample values, and refuses when a secret is missing;
//   2. the SDL template and the rendered SDL are valid for Akash's own SDL library (the
//      rendered one also through validate-sdl.mjs, the command akash/README.md gives);
//   3. deliberately broken copies of the SDL are rejected by that library;
//   4. deploy/docker-compose.yml is valid for the Compose Specification's JSON schema (and
//      broken copies are not), and refuses to interpolate without its secrets;
//   5. the two stacks agree: service names, images, exposed ports, persistent volumes and
//      environment; every IPFS_REGISTRY_* variable either sets is accepted by the registry's
//      own `config` subcommand (which refuses unknown settings); the Kubo variables are read
//      by the init script; the import profiles match.
//
//   node deploy/validate/check.mjs --binary target/debug/ipfs-registry
import { spawnSync } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import dotenv from "dotenv";
import yaml from "js-yaml";
import { sdlErrors } from "./lib/sdl.mjs";
import { composeErrors, loadCompose } from "./lib/compose.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const SDL_TEMPLATE = join(ROOT, "akash/deploy.yaml");
const RENDER = join(ROOT, "akash/render.sh");
const COMPOSE = join(ROOT, "deploy/docker-compose.yml");
const ENV_EXAMPLE = join(ROOT, "deploy/.env.example");
const KUBO_INIT = join(ROOT, "deploy/kubo/010-ipfs-registry.sh");
// Set only in the SDL: how the init script reaches the container on Akash, which cannot
// mount files (compose mounts deploy/kubo/ instead).
const SDL_ONLY_ENV = { kubo: ["KUBO_INIT_SCRIPT"] };

function usage() {
  console.error("usage: check.mjs --binary PATH_TO_ipfs-registry");
  process.exit(2);
}
const argv = process.argv.slice(2);
const binaryAt = argv.indexOf("--binary");
if (binaryAt < 0 || !argv[binaryAt + 1]) usage();
const BINARY = resolve(argv[binaryAt + 1]);
if (!existsSync(BINARY)) {
  console.error(`check: ${BINARY} does not exist (cargo build --locked first)`);
  process.exit(2);
}

let failures = 0;
function ok(message) {
  console.log(`ok    ${message}`);
}
function fail(message) {
  failures += 1;
  console.log(`FAIL  ${message}`);
}
function expect(condition, message, detail = "") {
  if (condition) ok(message);
  else fail(detail ? `${message}: ${detail}` : message);
}
const sameSet = (a, b) => a.length === b.length && [...a].sort().every((x, i) => x === [...b].sort()[i]);
const show = (list) => (list.length ? list.join(", ") : "(none)");

// ---- sample deployment values (secrets made up fresh each run) ----------------------------
const signingKey = generateKeyPairSync("ec", { namedCurve: "prime256v1" })
  .privateKey.export({ type: "pkcs8", format: "pem" })
  .toString();
const samples = {
  POSTGRES_PASSWORD: randomBytes(24).toString("hex"),
  REGISTRY_SIGNING_KEY: signingKey,
  REGISTRY_HOST: "registry.example.com",
  GATEWAY_HOST: "ipfs.example.com",
  REGISTRY_IMAGE: "ghcr.io/example/ipfs-registry:0.1.0",
  KUBO_APPEND_ANNOUNCE: "",
};
const work = mkdtempSync(join(tmpdir(), "ipfs-registry-deploy-check-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));

// ---- 1. render -----------------------------------------------------------------------------
function render(env, out) {
  return spawnSync("bash", [RENDER, out], {
    env: { PATH: process.env.PATH, ...env },
    encoding: "utf8",
  });
}
const renderedPath = join(work, "deploy.rendered.yaml");
const rendered = render(samples, renderedPath);
if (rendered.status !== 0) {
  fail(`akash/render.sh with sample values: ${rendered.stderr.trim()}`);
  process.exit(1);
}
ok("akash/render.sh renders the SDL from sample values");
{
  const { POSTGRES_PASSWORD: _omitted, ...withoutPassword } = samples;
  const out = join(work, "refused.yaml");
  const refused = render(withoutPassword, out);
  expect(
    refused.status !== 0 && !existsSync(out) && refused.stderr.includes("POSTGRES_PASSWORD"),
    "akash/render.sh refuses to render without POSTGRES_PASSWORD",
    `exit ${refused.status}: ${refused.stderr.trim()}`,
  );
}
const sdlText = readFileSync(renderedPath, "utf8");
const sdl = yaml.load(sdlText);

// ---- 2. valid SDL ---------------------------------------------------------------------------
for (const [name, text] of [
  ["akash/deploy.yaml (template)", readFileSync(SDL_TEMPLATE, "utf8")],
  ["rendered SDL", sdlText],
]) {
  const errors = sdlErrors(text);
  expect(errors.length === 0, `${name} is valid for Akash's SDL library`, errors.join("; "));
}
{
  // The command akash/README.md gives users for the same check.
  const cli = spawnSync(process.execPath, [join(ROOT, "deploy/validate/validate-sdl.mjs"), renderedPath], {
    encoding: "utf8",
  });
  expect(
    cli.status === 0,
    "node deploy/validate/validate-sdl.mjs accepts the rendered SDL",
    `exit ${cli.status}: ${(cli.stderr ?? "").trim()}`,
  );
}

// ---- 3. broken SDLs are rejected -------------------------------------------------------------
const someService = Object.keys(sdl.deployment)[0];
const somePlacement = Object.keys(sdl.deployment[someService])[0];
const storageService = Object.keys(sdl.services).find((s) => sdl.services[s].params?.storage);
const breakages = {
  "a deployment naming a compute profile that does not exist": (d) => {
    d.deployment[someService][somePlacement].profile = "no-such-profile";
  },
  "a placement without pricing for a deployed profile": (d) => {
    delete d.profiles.placement[somePlacement].pricing[d.deployment[someService][somePlacement].profile];
  },
  "a service mounting a volume its profile does not define": (d) => {
    const storage = d.services[storageService].params.storage;
    const [volume] = Object.keys(storage);
    storage["no-such-volume"] = storage[volume];
    delete storage[volume];
  },
  "an SDL version Akash does not know": (d) => {
    d.version = "3.0";
  },
};
{
  // Control: re-serialized untouched, the SDL stays valid, so each rejection below is the
  // breakage's doing.
  const errors = sdlErrors(yaml.dump(sdl));
  expect(errors.length === 0, "the rendered SDL, re-serialized, is still valid", errors.join("; "));
}
for (const [what, breakIt] of Object.entries(breakages)) {
  const broken = structuredClone(sdl);
  breakIt(broken);
  const errors = sdlErrors(yaml.dump(broken));
  if (errors.length > 0) ok(`broken SDL rejected: ${what} (${errors[0]})`);
  else fail(`broken SDL accepted: ${what}`);
}

// ---- 4. compose ------------------------------------------------------------------------------
const composeText = readFileSync(COMPOSE, "utf8");
const exampleEnv = dotenv.parse(readFileSync(ENV_EXAMPLE, "utf8"));
// The same deployment as the rendered SDL, so values can be compared one to one.
const composeEnv = {
  ...exampleEnv,
  POSTGRES_PASSWORD: samples.POSTGRES_PASSWORD,
  REGISTRY_SIGNING_KEY: samples.REGISTRY_SIGNING_KEY,
  REGISTRY_IMAGE: samples.REGISTRY_IMAGE,
  REGISTRY_PUBLIC_URL: `https://${samples.REGISTRY_HOST}`,
  KUBO_APPEND_ANNOUNCE: samples.KUBO_APPEND_ANNOUNCE,
};
let compose;
try {
  compose = loadCompose(composeText, composeEnv);
} catch (e) {
  fail(`deploy/docker-compose.yml does not interpolate: ${e.message}`);
  process.exit(1);
}
{
  const errors = composeErrors(compose);
  expect(errors.length === 0, "deploy/docker-compose.yml is valid for the Compose Specification schema", errors.join("; "));
}
for (const [what, breakIt] of Object.entries({
  "a service key compose does not know": (d) => {
    d.services[Object.keys(d.services)[0]].restart_policy = "always";
  },
  "a health check interval that is not a duration": (d) => {
    const s = Object.values(d.services).find((x) => x.healthcheck);
    s.healthcheck.interval = "ten seconds";
  },
})) {
  const broken = structuredClone(compose);
  breakIt(broken);
  const errors = composeErrors(broken);
  if (errors.length > 0) ok(`broken compose file rejected: ${what} (${errors[0]})`);
  else fail(`broken compose file accepted: ${what}`);
}
try {
  loadCompose(composeText, exampleEnv);
  fail("deploy/docker-compose.yml starts with .env.example's empty secrets");
} catch (e) {
  ok(`deploy/docker-compose.yml refuses empty secrets (${e.message.split(": ").pop()})`);
}

// ---- 5. the stacks agree -------------------------------------------------------------------
const sdlServices = Object.keys(sdl.services);
const composeServices = Object.keys(compose.services);
expect(
  sameSet(sdlServices, composeServices),
  `same services in both stacks (${show(sdlServices)})`,
  `SDL: ${show(sdlServices)}; compose: ${show(composeServices)}`,
);
const common = sdlServices.filter((s) => composeServices.includes(s));

for (const s of common) {
  const a = sdl.services[s].image;
  const b = compose.services[s].image;
  expect(a === b, `${s}: same image (${a})`, `SDL ${a}, compose ${b}`);
}

for (const s of sdlServices) {
  for (const expose of sdl.services[s].expose ?? []) {
    for (const to of expose.to ?? []) {
      if (to.service !== undefined) {
        expect(sdlServices.includes(to.service), `${s}: port ${expose.port} exposed to existing service ${to.service}`);
      }
    }
  }
}

function composePublished(service) {
  return (service.ports ?? []).map((p) => {
    if (typeof p === "object") return Number(p.target);
    return Number(String(p).split("/")[0].split(":").pop());
  });
}
for (const s of common) {
  const exposes = sdl.services[s].expose ?? [];
  const global = exposes.filter((e) => (e.to ?? []).some((t) => t.global)).map((e) => Number(e.port));
  const internal = exposes.filter((e) => !(e.to ?? []).some((t) => t.global)).map((e) => Number(e.port));
  const published = composePublished(compose.services[s]);
  expect(
    sameSet(global, published),
    `${s}: the ports public on Akash are the ports compose publishes (${show(global.map(String))})`,
    `SDL global: ${show(global.map(String))}; compose published: ${show(published.map(String))}`,
  );
  const leaked = internal.filter((p) => published.includes(p));
  expect(leaked.length === 0, `${s}: internal-only ports stay unpublished in compose (${show(internal.map(String))})`, `published: ${show(leaked.map(String))}`);
}

function composeVolumeTargets(service) {
  return (service.volumes ?? [])
    .map((v) => (typeof v === "object" ? v : { source: v.split(":")[0], target: v.split(":")[1] }))
    .filter((v) => compose.volumes && Object.hasOwn(compose.volumes, v.source))
    .map((v) => v.target);
}
for (const s of common) {
  const mounts = Object.values(sdl.services[s].params?.storage ?? {}).map((v) => v.mount);
  const targets = composeVolumeTargets(compose.services[s]);
  expect(
    sameSet(mounts, targets),
    `${s}: same persistent data paths (${show(mounts)})`,
    `SDL persistent mounts: ${show(mounts)}; compose named volumes: ${show(targets)}`,
  );
}

function sdlEnv(service) {
  return Object.fromEntries(
    (service.env ?? []).map((line) => {
      const at = line.indexOf("=");
      return at < 0 ? [line, ""] : [line.slice(0, at), line.slice(at + 1)];
    }),
  );
}
function composeEnvOf(service) {
  const env = service.environment ?? {};
  if (Array.isArray(env)) return sdlEnv({ env });
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? "" : String(v)]));
}
const envs = {};
for (const s of common) {
  const a = sdlEnv(sdl.services[s]);
  const b = composeEnvOf(compose.services[s]);
  envs[s] = { sdl: a, compose: b };
  const sdlOnly = SDL_ONLY_ENV[s] ?? [];
  const aNames = Object.keys(a).filter((k) => !sdlOnly.includes(k));
  const bNames = Object.keys(b);
  expect(
    sameSet(aNames, bNames),
    `${s}: same environment variables in both stacks (${aNames.length})`,
    `only in SDL: ${show(aNames.filter((k) => !bNames.includes(k)))}; only in compose: ${show(bNames.filter((k) => !aNames.includes(k)))}`,
  );
  const differing = aNames.filter((k) => bNames.includes(k) && a[k] !== b[k]);
  expect(differing.length === 0, `${s}: same values for the same deployment`, `differ: ${show(differing)}`);
}

// Every variable the registry service gets must be one of its settings: run the registry's
// own `config` with exactly that environment. Settings are deny_unknown_fields, so a
// misspelt or not-yet-supported variable is refused, naming it.
function runConfig(env) {
  return spawnSync(BINARY, ["config"], { env: { PATH: process.env.PATH, ...env }, encoding: "utf8" });
}
function checkRegistryEnv(stack, env) {
  const names = Object.keys(env);
  const foreign = names.filter((k) => !k.startsWith("IPFS_REGISTRY_"));
  expect(foreign.length === 0, `registry (${stack}): every variable is an IPFS_REGISTRY_* setting`, show(foreign));
  const all = runConfig(env);
  if (all.status === 0) {
    ok(`registry (${stack}): \`ipfs-registry config\` accepts all ${names.length} variables`);
    return;
  }
  // Which ones? Each alone, so that one refusal does not hide another.
  const rejected = names.filter((k) => runConfig({ [k]: env[k] }).status !== 0);
  const rest = Object.fromEntries(names.filter((k) => !rejected.includes(k)).map((k) => [k, env[k]]));
  const restRun = runConfig(rest);
  const why = rejected.length ? runConfig({ [rejected[0]]: env[rejected[0]] }).stderr.trim().split("\n")[0] : all.stderr.trim();
  fail(
    `registry (${stack}): \`ipfs-registry config\` rejects ${rejected.length} of ${names.length} variables: ${show(rejected)}\n` +
      `      first refusal: ${why}\n` +
      `      the other ${Object.keys(rest).length}: ${restRun.status === 0 ? "accepted" : `rejected too: ${restRun.stderr.trim()}`}`,
  );
}
if (envs.registry) {
  checkRegistryEnv("SDL", envs.registry.sdl);
  checkRegistryEnv("compose", envs.registry.compose);
}

const initScript = readFileSync(KUBO_INIT, "utf8");
if (envs.kubo) {
  const kuboVars = Object.keys(envs.kubo.sdl).filter((k) => k.startsWith("KUBO_") && !(SDL_ONLY_ENV.kubo ?? []).includes(k));
  const unread = kuboVars.filter((k) => !initScript.includes(k));
  expect(unread.length === 0, `kubo: the init script reads ${show(kuboVars)}`, `not read: ${show(unread)}`);
  const args = (sdl.services.kubo.args ?? []).join(" ");
  expect(
    args.includes("$KUBO_INIT_SCRIPT") && args.includes("/container-init.d/"),
    "kubo (SDL): the container writes KUBO_INIT_SCRIPT into /container-init.d/",
  );
  const mounted = (compose.services.kubo.volumes ?? []).some((v) => String(v).startsWith("./kubo/010-ipfs-registry.sh:/container-init.d/"));
  expect(mounted, "kubo (compose): the init script is mounted into /container-init.d/");
}

// Durability: an acknowledged push must survive a power cut (docs/operations.md).
const DURABLE_PG = ["fsync=on", "synchronous_commit=on", "full_page_writes=on"];
const pgArgs = {
  SDL: [...(sdl.services.postgres?.command ?? []), ...(sdl.services.postgres?.args ?? [])],
  compose: [].concat(compose.services.postgres?.command ?? []),
};
for (const [stack, list] of Object.entries(pgArgs)) {
  const set = list.map(String);
  const missing = DURABLE_PG.filter((setting) => !set.some((arg, i) => arg === setting && set[i - 1] === "-c"));
  expect(
    missing.length === 0 && set[0] === "postgres",
    `postgres (${stack}): started as \`postgres -c ${DURABLE_PG.join(" -c ")}\``,
    `missing ${show(missing)} in ${show(set)}`,
  );
}
expect(
  /"type":"flatfs"[^}]*"sync":true/.test(initScript) && !/"sync":false/.test(initScript),
  "kubo: the init script turns flatfs sync on (blocks on disk before add answers)",
);

const chunker = /Import\.UnixFSChunker size-(\d+)/.exec(initScript)?.[1];
const chunkSize = envs.registry?.sdl.IPFS_REGISTRY_IMPORT_PROFILE__CHUNK_SIZE;
expect(
  chunker !== undefined && chunker === chunkSize,
  `Kubo's default chunker matches the registry's import_profile.chunk_size (${chunkSize})`,
  `Kubo size-${chunker}, registry ${chunkSize}`,
);

console.log(failures === 0 ? "deploy checks: all passed" : `deploy checks: ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
