#!/usr/bin/env node
// The deployment checks CI runs (scripts/check-deploy.sh):
//   1. akash/render.sh renders the SDL from sample values, and refuses when a secret is
//      missing or the registry image names no fixed build (no tag or digest, or :latest);
//   2. the SDL template and the rendered SDL are valid for Akash's own SDL library (the
//      rendered one also through validate-sdl.mjs, the command akash/README.md gives), and
//      priced in uact (our own check: the library accepts any denom);
//   3. deliberately broken copies of the SDL are rejected by that library (or by our
//      pricing check);
//   4. deploy/docker-compose.yml is valid for the Compose Specification's JSON schema (and
//      broken copies are not), and refuses to interpolate without its secrets;
//   5. the two stacks agree: service names, images, exposed ports, persistent volumes and
//      environment; every IPFS_REGISTRY_* variable either sets is accepted by the registry's
//      own `config` subcommand (which refuses unknown settings); the Kubo variables are read
//      by the init script; the import profiles match; Kubo's memory settings fit its memory
//      limit in both stacks; both stacks run the registry's GC and neither runs Kubo's
//      automatic repo GC (--enable-gc);
//   6. the Kubo init script, run against a stand-in `ipfs` that refuses the config keys the
//      Kubo version it plays does not have (as Kubo does), configures Kubo 0.35 to 0.40
//      and listens only on the swarm ports both stacks expose.
//
//   node deploy/validate/check.mjs --binary target/debug/ipfs-registry
import { spawnSync } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync } from "node:fs";
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
{
  // The registry image must name one build: a version tag or a digest.
  const digest = `sha256:${randomBytes(32).toString("hex")}`;
  const images = [
    ["ghcr.io/example/ipfs-registry", false, "no tag or digest"],
    ["localhost:5000/ipfs-registry", false, "no tag or digest"],
    ["ghcr.io/example/ipfs-registry:latest", false, ":latest"],
    ["ghcr.io/example/ipfs-registry@sha256:0123", false, "digest"],
    ["localhost:5000/team/ipfs-registry:0.1.0", true],
    [`ghcr.io/example/ipfs-registry@${digest}`, true],
    [`ghcr.io/example/ipfs-registry:0.1.0@${digest}`, true],
  ];
  for (const [image, accepted, why] of images) {
    const out = join(work, "image.yaml");
    rmSync(out, { force: true });
    const r = render({ ...samples, REGISTRY_IMAGE: image }, out);
    if (accepted) {
      expect(r.status === 0 && existsSync(out), `akash/render.sh accepts REGISTRY_IMAGE=${image}`, r.stderr.trim());
    } else {
      expect(
        r.status !== 0 && !existsSync(out) && r.stderr.includes("REGISTRY_IMAGE") && r.stderr.includes(why),
        `akash/render.sh refuses REGISTRY_IMAGE=${image} (${why})`,
        `exit ${r.status}: ${r.stderr.trim()}`,
      );
    }
  }
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

// Akash prices and escrows deployments in uact (ACT, pegged to the US dollar) since its
// burn-mint-equilibrium upgrade, and refuses uakt-priced ones at deposit time; Akash's SDL
// library still accepts any denom, so this is our own check.
const BLOCKS_PER_MONTH = 432_000; // ~6 s blocks, 30 days
function pricingErrors(doc) {
  const errors = [];
  for (const [placement, p] of Object.entries(doc.profiles?.placement ?? {})) {
    for (const [profile, price] of Object.entries(p.pricing ?? {})) {
      if (price?.denom !== "uact") errors.push(`${placement}.pricing.${profile}: denom ${price?.denom}, not uact`);
      if (!(Number(price?.amount) > 0)) errors.push(`${placement}.pricing.${profile}: amount ${price?.amount}`);
    }
  }
  return errors;
}
for (const [name, doc] of [
  ["akash/deploy.yaml (template)", yaml.load(readFileSync(SDL_TEMPLATE, "utf8"))],
  ["rendered SDL", sdl],
]) {
  const errors = pricingErrors(doc);
  expect(errors.length === 0, `${name}: every bid ceiling is priced in uact`, errors.join("; "));
}
{
  // What the ceilings add up to, per block and per month, with the counts deployed.
  let perBlock = 0;
  for (const service of Object.values(sdl.deployment)) {
    for (const [placement, d] of Object.entries(service)) {
      perBlock += Number(sdl.profiles.placement[placement].pricing[d.profile].amount) * Number(d.count ?? 1);
    }
  }
  ok(`the stack's bid ceiling: ${perBlock} uact/block, about USD ${((perBlock * BLOCKS_PER_MONTH) / 1e6).toFixed(2)} a month`);
  const uakt = structuredClone(sdl);
  const [placement] = Object.keys(uakt.profiles.placement);
  const [profile] = Object.keys(uakt.profiles.placement[placement].pricing);
  uakt.profiles.placement[placement].pricing[profile].denom = "uakt";
  const ours = pricingErrors(uakt);
  const theirs = sdlErrors(yaml.dump(uakt));
  expect(
    ours.length > 0,
    `an SDL priced in uakt is refused by our pricing check (${ours[0]}; Akash's SDL library finds ${theirs.length} errors in it)`,
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
  // Which proxies to trust differs by host (compose: none by default, .env); given the
  // SDL's value, the two stacks must set the same.
  REGISTRY_TRUSTED_PROXIES: (sdl.services.registry?.env ?? [])
    .find((l) => l.startsWith("IPFS_REGISTRY_AUTH__TRUSTED_PROXIES="))
    ?.split("=")
    .slice(1)
    .join("="),
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
  // Kubo's automatic repo GC frees nothing once the pinned layers pass its watermark, yet
  // holds the lock add and pin need while it walks the repo: pushes would get 503.
  const daemonArgs = {
    SDL: [...(sdl.services.kubo.command ?? []), ...(sdl.services.kubo.args ?? [])].join(" "),
    compose: [].concat(compose.services.kubo.command ?? []).join(" "),
  };
  for (const [stack, line] of Object.entries(daemonArgs)) {
    expect(
      /\bdaemon\b/.test(line) && !line.includes("--enable-gc"),
      `kubo (${stack}): the daemon runs without --enable-gc (no automatic repo GC)`,
      line,
    );
  }
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

// Kubo's memory: GOMEMLIMIT bounds the Go process, Swarm.ResourceMgr.MaxMemory (from
// KUBO_SWARM_MAX_MEMORY) libp2p within it; both under the container's memory limit, which
// is what Kubo would otherwise not know (it sizes itself from the host's memory).
const UNIT = { "": 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12, ki: 2 ** 10, mi: 2 ** 20, gi: 2 ** 30, ti: 2 ** 40 };
function bytesOf(text, binary) {
  // Akash: 4Gi (binary) or 4G (decimal); compose (docker units): 4g = 4GiB, always binary;
  // Go's GOMEMLIMIT: 3GiB; Kubo's MaxMemory (go-humanize): 1GiB binary, 1GB decimal.
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?$/i.exec(String(text ?? "").trim());
  if (!m) return NaN;
  const unit = `${m[2].toLowerCase()}${binary || m[3] ? "i" : ""}`;
  return Number(m[1]) * (UNIT[unit === "i" ? "" : unit] ?? NaN);
}
if (envs.kubo) {
  const placementOf = (service) => Object.values(sdl.deployment[service])[0];
  const limits = {
    SDL: bytesOf(sdl.profiles.compute[placementOf("kubo").profile].resources.memory.size, false),
    compose: bytesOf(compose.services.kubo.deploy?.resources?.limits?.memory, true),
  };
  for (const [stack, limit] of Object.entries(limits)) {
    const env = stack === "SDL" ? envs.kubo.sdl : envs.kubo.compose;
    const goLimit = bytesOf(env.GOMEMLIMIT, true);
    const libp2p = bytesOf(env.KUBO_SWARM_MAX_MEMORY, false);
    const gib = (n) => `${(n / 2 ** 30).toFixed(2)} GiB`;
    expect(
      libp2p > 0 && goLimit > libp2p && goLimit <= 0.9 * limit,
      `kubo (${stack}): KUBO_SWARM_MAX_MEMORY ${env.KUBO_SWARM_MAX_MEMORY} < GOMEMLIMIT ${env.GOMEMLIMIT} <= 90% of the memory limit ${gib(limit)}`,
      `KUBO_SWARM_MAX_MEMORY ${env.KUBO_SWARM_MAX_MEMORY}, GOMEMLIMIT ${env.GOMEMLIMIT}, limit ${Number.isNaN(limit) ? "not set" : gib(limit)}`,
    );
  }
  expect(
    /cfg Swarm\.ResourceMgr\.MaxMemory "\$\{KUBO_SWARM_MAX_MEMORY/.test(initScript),
    "kubo: the init script sets Swarm.ResourceMgr.MaxMemory from KUBO_SWARM_MAX_MEMORY",
  );
}

// The registry's own GC: without it deleted images and abandoned uploads stay pinned.
// Read back from `ipfs-registry config`, the effective settings.
function seconds(humantime) {
  const units = { ns: 1e-9, us: 1e-6, ms: 1e-3, s: 1, sec: 1, secs: 1, m: 60, min: 60, mins: 60, h: 3600, hr: 3600, hrs: 3600, hour: 3600, hours: 3600, d: 86400, day: 86400, days: 86400, w: 604800, week: 604800, weeks: 604800 };
  let total = 0;
  for (const [, n, unit] of String(humantime).matchAll(/(\d+)\s*([a-z]+)/g)) total += Number(n) * (units[unit] ?? NaN);
  return total;
}
function gcSettings(env) {
  const out = runConfig(env);
  const section = /^\[gc\]\n((?:[^[\n].*\n?)*)/m.exec(out.stdout ?? "")?.[1] ?? "";
  return Object.fromEntries([...section.matchAll(/^(\w+) = "([^"]*)"/gm)].map(([, k, v]) => [k, v]));
}
if (envs.registry) {
  for (const [stack, env] of Object.entries({ SDL: envs.registry.sdl, compose: envs.registry.compose })) {
    const gc = gcSettings(env);
    const interval = seconds(gc.interval);
    const grace = seconds(gc.grace_period);
    expect(
      interval > 0 && grace >= 3600,
      `registry (${stack}): online GC every ${gc.interval}, keeping blobs younger than ${gc.grace_period} (at least 1h)`,
      `gc.interval ${gc.interval}, gc.grace_period ${gc.grace_period}`,
    );
  }
}

// ---- 6. the Kubo init script against the Kubo versions it supports ---------------------------
// The stand-in `ipfs`: `version --number`, `config profile apply`, and `config [--json] KEY
// [VALUE]` for the keys the init script uses, each known from the Kubo version that added it
// (checked in Kubo's config/ sources), refusing a key the version it plays does not know as
// Kubo's config.CheckKey does ("failed to set config value: Provide not found").
const KUBO_KEYS = {
  "Addresses.API": "0.0",
  "Addresses.Gateway": "0.0",
  "Addresses.Swarm": "0.0",
  "Addresses.AppendAnnounce": "0.0",
  "Gateway.NoFetch": "0.0",
  "Import.CidVersion": "0.29",
  "Import.UnixFSRawLeaves": "0.29",
  "Import.UnixFSChunker": "0.29",
  "Import.HashFunction": "0.29",
  "Import.UnixFSFileMaxLinks": "0.35",
  "Reprovider.Strategy": "0.0",
  "Provide.Strategy": "0.38",
  "Swarm.ResourceMgr.MaxMemory": "0.19",
  "Datastore.Spec": "0.0",
  "Datastore.StorageMax": "0.0",
  "Datastore.StorageGCWatermark": "0.0",
  "Datastore.GCPeriod": "0.0",
};
// Kubo's default Datastore.Spec (config/init.go flatfsSpec), as `ipfs config` prints it.
const KUBO_DEFAULT_SPEC = {
  mounts: [
    { mountpoint: "/blocks", path: "blocks", prefix: "flatfs.datastore", shardFunc: "/repo/flatfs/shard/v1/next-to-last/2", sync: false, type: "flatfs" },
    { compression: "none", mountpoint: "/", path: "datastore", prefix: "leveldb.datastore", type: "levelds" },
  ],
  type: "mount",
};
const STAND_IN = String.raw`#!/bin/sh
# Stand-in for Kubo's ipfs CLI (deploy/validate/check.mjs).
set -e
ge() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, "."); split(b, y, "."); exit !((x[1] + 0 > y[1] + 0) || (x[1] + 0 == y[1] + 0 && x[2] + 0 >= y[2] + 0)) }'; }
case "$1" in
  version) [ "$2" = --number ] || exit 2; echo "$FAKE_KUBO_VERSION"; exit 0 ;;
  config) shift ;;
  *) echo "stand-in ipfs: unexpected: $*" >&2; exit 2 ;;
esac
if [ "$1" = profile ]; then [ "$2" = apply ] || exit 2; echo "profile $3" >> "$FAKE_KUBO_LOG"; exit 0; fi
json=""
if [ "$1" = --json ]; then json="--json "; shift; fi
key="$1"
since=$(awk -v k="$key" '$1 == k { print $2 }' "$FAKE_KUBO_KEYS")
if [ -z "$since" ] || ! ge "$FAKE_KUBO_VERSION" "$since"; then
  echo "Error: failed to set config value: $(echo "$key" | cut -d. -f1) not found (maybe use --json?)" >&2
  exit 1
fi
if [ $# -eq 1 ]; then
  [ "$key" = Datastore.Spec ] || { echo "stand-in ipfs: no value kept for $key" >&2; exit 1; }
  cat "$FAKE_KUBO_SPEC"; exit 0
fi
[ $# -eq 2 ] || { echo "stand-in ipfs: config $*" >&2; exit 2; }
printf 'set %s %s%s\n' "$key" "$json" "$2" >> "$FAKE_KUBO_LOG"
`;
{
  const bin = join(work, "kubo-bin");
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, "ipfs"), STAND_IN);
  chmodSync(join(bin, "ipfs"), 0o755);
  writeFileSync(join(work, "kubo-keys"), Object.entries(KUBO_KEYS).map(([k, v]) => `${k} ${v}`).join("\n") + "\n");
  writeFileSync(join(work, "kubo-spec.json"), `${JSON.stringify(KUBO_DEFAULT_SPEC, null, 2)}\n`);
  // The Kubo image runs its init scripts with busybox sh; use it when it is here.
  const shell = ["/bin/busybox", "/usr/bin/busybox"].find(existsSync);
  const runInit = (version, extraEnv = {}) => {
    const log = join(work, `kubo-${version}.log`);
    rmSync(log, { force: true });
    const r = spawnSync(shell ?? "sh", shell ? ["sh", KUBO_INIT] : [KUBO_INIT], {
      env: {
        PATH: `${bin}:${process.env.PATH}`,
        FAKE_KUBO_VERSION: version,
        FAKE_KUBO_LOG: log,
        FAKE_KUBO_KEYS: join(work, "kubo-keys"),
        FAKE_KUBO_SPEC: join(work, "kubo-spec.json"),
        ...extraEnv,
      },
      encoding: "utf8",
    });
    const sets = existsSync(log) ? readFileSync(log, "utf8") : "";
    return { ...r, sets };
  };
  // Control: the stand-in refuses what the version it plays lacks, as Kubo does.
  {
    const r = spawnSync(join(bin, "ipfs"), ["config", "Provide.Strategy", "pinned"], {
      env: { PATH: process.env.PATH, FAKE_KUBO_VERSION: "0.37.0", FAKE_KUBO_LOG: "/dev/null", FAKE_KUBO_KEYS: join(work, "kubo-keys") },
      encoding: "utf8",
    });
    expect(
      r.status !== 0 && r.stderr.includes("Provide not found"),
      "the stand-in Kubo 0.37 refuses `ipfs config Provide.Strategy pinned`, as Kubo 0.37 does",
      `exit ${r.status}: ${r.stderr.trim()}`,
    );
  }
  const kuboEnv = Object.fromEntries(Object.entries(envs.kubo?.sdl ?? {}).filter(([k]) => k.startsWith("KUBO_") && k !== "KUBO_INIT_SCRIPT"));
  for (const version of ["0.35.0", "0.36.0", "0.37.0", "0.38.0", "0.39.0", "0.40.0-rc1"]) {
    const r = runInit(version, kuboEnv);
    const modern = !version.startsWith("0.35") && !version.startsWith("0.36") && !version.startsWith("0.37");
    const strategy = modern ? "Provide.Strategy pinned" : "Reprovider.Strategy pinned";
    const wrong = modern ? "Reprovider.Strategy" : "Provide.Strategy";
    expect(
      r.status === 0 && r.sets.includes(`set ${strategy}\n`) && !r.sets.includes(`set ${wrong} `) &&
        r.sets.includes("set Import.UnixFSFileMaxLinks --json 174\n") && /set Datastore\.Spec --json .*"sync":true/.test(r.sets),
      `kubo: the init script configures Kubo ${version} (${strategy})`,
      `exit ${r.status}: ${r.stderr.trim()}\n${r.sets}`,
    );
  }
  {
    const r = runInit("0.34.0", kuboEnv);
    expect(
      r.status !== 0 && r.stderr.includes("older than 0.35"),
      "kubo: the init script refuses Kubo 0.34 with a message naming the oldest supported version",
      `exit ${r.status}: ${r.stderr.trim()}`,
    );
  }
  // What it configured for the version both stacks run.
  const image = sdl.services.kubo?.image ?? "";
  const running = /:v(\d+\.\d+\.\d+)/.exec(image)?.[1] ?? "0.39.0";
  const r = runInit(running, kuboEnv);
  const value = (key) => new RegExp(`^set ${key.replaceAll(".", "\\.")} (?:--json )?(.*)$`, "m").exec(r.sets)?.[1];
  expect(
    value("Datastore.GCPeriod") === "0s",
    `kubo ${running}: Datastore.GCPeriod is 0s (periodic repo GC off even with --enable-gc)`,
    `set to ${value("Datastore.GCPeriod")}`,
  );
  expect(
    value("Swarm.ResourceMgr.MaxMemory") === kuboEnv.KUBO_SWARM_MAX_MEMORY,
    `kubo ${running}: Swarm.ResourceMgr.MaxMemory is KUBO_SWARM_MAX_MEMORY (${kuboEnv.KUBO_SWARM_MAX_MEMORY})`,
    `set to ${value("Swarm.ResourceMgr.MaxMemory")}`,
  );
  // Swarm listeners: each (port, protocol) Kubo listens on must be exposed by both stacks,
  // or Kubo announces addresses nobody can reach.
  let listen = [];
  try {
    listen = JSON.parse(value("Addresses.Swarm") ?? "null");
  } catch {
    listen = null;
  }
  if (!Array.isArray(listen)) fail("kubo: the init script sets Addresses.Swarm (a JSON list)");
  else {
    const wanted = [...new Set(listen.map((a) => {
      const m = /\/(tcp|udp)\/(\d+)/.exec(a);
      return m ? `${m[2]}/${m[1]}` : `? ${a}`;
    }))];
    const sdlPorts = (sdl.services.kubo.expose ?? []).filter((e) => (e.to ?? []).some((t) => t.global)).map((e) => `${e.port}/${e.proto ?? "tcp"}`);
    const composePorts = (compose.services.kubo.ports ?? []).map((p) => {
      if (typeof p === "object") return `${p.target}/${p.protocol ?? "tcp"}`;
      const [ports, proto = "tcp"] = String(p).split("/");
      return `${ports.split(":").pop()}/${proto}`;
    });
    const missing = wanted.filter((w) => !sdlPorts.includes(w) || !composePorts.includes(w));
    expect(
      missing.length === 0,
      `kubo: it listens on ${show(wanted)} (Addresses.Swarm), which both stacks expose`,
      `not exposed: ${show(missing)} (SDL: ${show(sdlPorts)}; compose: ${show(composePorts)})`,
    );
  }
}

console.log(failures === 0 ? "deploy checks: all passed" : `deploy checks: ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
