#!/usr/bin/env node
// Rebuilds the exact build context of deploy/Dockerfile in a temporary directory and runs
// the Dockerfile's build stage there, so that a file the compile needs but the image does
// not get (left out by .dockerignore or by the COPY lines) fails CI, without Docker: Docker
// Hub, and so the base images, is out of reach here. Run by scripts/check-image-context.sh.
//
//   node deploy/validate/image-context.mjs --root DIR [--dockerfile FILE] [--dockerignore FILE]
//        [--work DIR] [--log FILE] [--controls]
//
// 1. The context: every file under --root that --dockerignore lets through, with Docker's
//    own matching rules (moby/patternmatcher: patterns cleaned as `filepath.Clean` does,
//    `*`, `?`, `[...]`, `**`, `!` exceptions, the last matching pattern wins, a pattern
//    matching a parent directory matches everything below it).
// 2. The build stage: the stage(s) the final stage `COPY --from`s. Its instructions run in
//    order in --work (standing for its WORKDIR): COPY takes files from the context only,
//    and fails as Docker does when a source is missing or excluded; RUN runs its commands
//    with `cargo build` turned into `cargo $IMAGE_CONTEXT_CARGO` (default `check`) of the
//    debug profile with `--offline` (the profile does not change which files are read;
//    see scripts/check-image-context.sh), after checking it keeps `--locked`; `strip` is
//    skipped. Only plain file commands (mkdir, touch, rm, echo, printf) and cargo may
//    appear in a RUN, on relative paths, so nothing outside --work is touched.
// 3. Static checks: the builder image is `rust:<Cargo.toml's rust-version>`; no locked
//    dependency the binary is built from needs a newer Rust; the final stage copies the
//    binary the build stage builds.
// 4. With --controls, two broken variants must fail: a .dockerignore that drops
//    migrations-embedded/ (at its COPY), and a Dockerfile that does
//    not COPY it (in the compile).
import { spawnSync } from "node:child_process";
import {
  copyFileSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync,
  readlinkSync, rmSync, symlinkSync, writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";

// ---- .dockerignore (moby/buildkit dockerignore.ReadAll + moby/patternmatcher) -------------

export function readDockerignore(text) {
  const patterns = [];
  for (let line of text.replace(/^\uFEFF/, "").split(/\r?\n/)) {
    line = line.trim();
    if (line === "" || line.startsWith("#")) continue;
    let exclusion = false;
    if (line.startsWith("!")) {
      exclusion = true;
      line = line.slice(1).trim();
    }
    if (line.length > 0) {
      line = cleanPath(line);
      if (line.length > 1 && line.startsWith("/")) line = line.slice(1);
    }
    patterns.push({ text: line, exclusion, regex: patternRegex(line) });
  }
  return patterns;
}

// Go's filepath.Clean for slash paths.
function cleanPath(p) {
  if (p === "") return ".";
  const rooted = p.startsWith("/");
  const out = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!rooted) out.push("..");
    } else out.push(part);
  }
  const joined = out.join("/");
  return rooted ? `/${joined}` : joined || ".";
}

// patternmatcher's Pattern.compile, as a JavaScript regex over slash paths.
function patternRegex(pattern) {
  let re = "^";
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i];
    if (ch === "*") {
      if (pattern[i + 1] === "*") {
        i += 1;
        if (pattern[i + 1] === "/") i += 1;
        re += i + 1 >= pattern.length ? ".*" : "(.*/)?";
      } else re += "[^/]*";
    } else if (ch === "?") re += "[^/]";
    else if (".+()|{}$^".includes(ch)) re += `\\${ch}`;
    else if (ch === "\\") {
      if (i + 1 < pattern.length) {
        i += 1;
        re += `\\${pattern[i]}`;
      } else re += "\\\\";
    } else re += ch;
  }
  return new RegExp(`${re}$`);
}

// patternmatcher's MatchesOrParentMatches: the last pattern that matches the path or one of
// its parent directories decides.
export function excluded(patterns, path) {
  const parents = path.split("/").slice(0, -1);
  let matched = false;
  for (const p of patterns) {
    if (p.exclusion !== matched) continue;
    let match = p.regex.test(path);
    for (let i = 0; !match && i < parents.length; i++) {
      match = p.regex.test(parents.slice(0, i + 1).join("/"));
    }
    if (match) matched = !p.exclusion;
  }
  return matched;
}

// Whether an exception (`!pattern`) could re-include something below an excluded directory;
// if not, the walk does not descend (as BuildKit's walker does), so target/ and
// node_modules/ are never read.
function mayReinclude(patterns, dir) {
  const parts = dir.split("/");
  return patterns.some((p) => {
    if (!p.exclusion) return false;
    if (p.text.includes("**")) return true;
    const pp = p.text.split("/");
    if (pp.length <= parts.length) return false;
    return parts.every((part, i) => patternRegex(pp[i]).test(part));
  });
}

const MAX_CONTEXT_BYTES = 512 * 1024 * 1024;

// The files (and symlinks) of the build context, as sorted relative slash paths.
export function contextFiles(root, patterns) {
  const files = [];
  let bytes = 0;
  const walk = (rel) => {
    for (const entry of readdirSync(join(root, rel), { withFileTypes: true })) {
      const path = rel ? `${rel}/${entry.name}` : entry.name;
      const out = excluded(patterns, path);
      if (entry.isDirectory()) {
        if (!out || mayReinclude(patterns, path)) walk(path);
      } else if (!out) {
        files.push(path);
        if (entry.isFile()) bytes += lstatSync(join(root, path)).size;
        if (bytes > MAX_CONTEXT_BYTES) {
          throw new Error(
            `the build context is over ${MAX_CONTEXT_BYTES >> 20} MiB (at ${path}): .dockerignore lets too much through`,
          );
        }
      }
    }
  };
  walk("");
  return { files: files.sort(), bytes };
}

// Cases whose outcome Docker's own matcher (moby/patternmatcher) gives, checked on every
// run so that a change to the matcher above cannot quietly change what the context holds.
const MATCHER_CASES = [
  [["*", "!src/"], "src/main.rs", false],
  [["*", "!src/"], "srcx/main.rs", true],
  [["*", "!migrations/"], "migrations-embedded/meta/V1__initial.sql", true],
  [["**/*.go"], "a/b/c.go", true],
  [["**/*.go"], "c.go", true],
  [["docs", "!docs/README.md"], "docs/a.md", true],
  [["docs", "!docs/README.md"], "docs/README.md", false],
  [["*.md", "!README*.md", "README-secret.md"], "README-secret.md", true],
  [["*.md", "!README*.md", "README-secret.md"], "README.md", false],
  [["/target"], "target/debug/x", true],
  [["target/"], "target/debug/x", true],
  [["# comment", " src ", "!src/keep"], "src/keep", false],
  [["a/?.txt"], "a/b.txt", true],
  [["a/[bc].txt"], "a/d.txt", false],
];

export function matcherErrors() {
  return MATCHER_CASES.filter(([lines, path, want]) => excluded(readDockerignore(lines.join("\n")), path) !== want).map(
    ([lines, path, want]) => `${JSON.stringify(lines)}: ${path} should be ${want ? "excluded" : "included"}`,
  );
}

// ---- Dockerfile ----------------------------------------------------------------------------

export function parseDockerfile(text) {
  const instructions = [];
  let current = null;
  let lineNo = 0;
  for (const raw of text.split(/\r?\n/)) {
    lineNo += 1;
    const trimmed = raw.trim();
    if (current === null) {
      if (trimmed === "" || trimmed.startsWith("#")) continue;
      const m = /^(\S+)\s*(.*)$/.exec(trimmed);
      current = { keyword: m[1].toUpperCase(), text: m[2], line: lineNo };
    } else {
      // Inside a continuation, comment lines are dropped and empty lines ignored.
      if (trimmed.startsWith("#") || trimmed === "") continue;
      current.text += ` ${trimmed}`;
    }
    if (current.text.endsWith("\\")) {
      current.text = current.text.slice(0, -1).trimEnd();
    } else {
      instructions.push(current);
      current = null;
    }
  }
  if (current) instructions.push(current);

  const stages = [];
  for (const ins of instructions) {
    if (ins.keyword === "FROM") {
      const words = ins.text.split(/\s+/).filter((w) => !w.startsWith("--"));
      const as = words.findIndex((w) => w.toUpperCase() === "AS");
      stages.push({ image: words[0], name: as >= 0 ? words[as + 1] : String(stages.length), line: ins.line, body: [] });
    } else if (stages.length > 0) {
      stages[stages.length - 1].body.push(ins);
    }
  }
  return stages;
}

// Splits an instruction's arguments: the JSON form, or shell words with simple quoting.
function words(text) {
  if (text.trimStart().startsWith("[")) return JSON.parse(text);
  const out = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  let m;
  while ((m = re.exec(text))) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

function copyArgs(text) {
  const all = words(text);
  const flags = {};
  let i = 0;
  for (; i < all.length && all[i].startsWith("--"); i++) {
    const [k, v] = all[i].slice(2).split("=");
    flags[k] = v ?? true;
  }
  const rest = all.slice(i);
  return { flags, sources: rest.slice(0, -1), dest: rest[rest.length - 1] };
}

// ---- running the build stage -----------------------------------------------------------

const PRELUDE = String.raw`
cargo() {
  local sub="$1" a locked=0
  shift
  local args=()
  for a in "$@"; do
    case "$a" in
      --release) ;;
      --locked) locked=1; args+=("$a") ;;
      *) args+=("$a") ;;
    esac
  done
  if [ "$locked" != 1 ]; then
    echo "image-context: the Dockerfile runs 'cargo $sub $*' without --locked" >&2
    return 1
  fi
  local run="$sub"
  if [ "$sub" = build ]; then run="$IMAGE_CONTEXT_CARGO"; fi
  echo "image-context: cargo $run ${"${args[*]}"} --offline   (Dockerfile: cargo $sub $*)" >&2
  command cargo "$run" "${"${args[@]}"}" --offline
}
strip() { echo "image-context: not run: strip $*" >&2; }
`;

const ALLOWED = new Set(["mkdir", "touch", "rm", "echo", "printf", "cargo", "strip", "true"]);

// Each command of a RUN must be one the check can run safely in the work directory.
function checkRun(commands) {
  for (const command of commands) {
    const w = words(command);
    if (!ALLOWED.has(w[0])) {
      return `RUN command '${w[0]}' is not one this check runs (${[...ALLOWED].join(", ")}); teach deploy/validate/image-context.mjs about it`;
    }
    const paths = [];
    for (let i = 1; i < w.length; i++) {
      if (w[i] === ">" || w[i] === ">>") paths.push(w[++i]);
      else if (/^>>?./.test(w[i])) paths.push(w[i].replace(/^>>?/, ""));
      else if (["mkdir", "touch", "rm"].includes(w[0]) && !w[i].startsWith("-")) paths.push(w[i]);
    }
    const bad = paths.find((p) => p === undefined || p.startsWith("/") || p.split("/").includes("..") || /[$`~*]/.test(p));
    if (bad !== undefined) return `RUN '${command}': only plain relative paths are supported (${bad})`;
  }
  return null;
}

function isGlob(s) {
  return /[*?[]/.test(s);
}

// Copies COPY's sources from the context into the work directory, as Docker does: a
// directory's contents into the destination directory; a file to the destination (or into
// it, when it ends in / or there are several sources).
function runCopy(ins, ctx, work, cwd) {
  const { flags, sources, dest } = copyArgs(ins.text);
  if (flags.from !== undefined) return `line ${ins.line}: COPY --from inside the build stage is not supported`;
  if (flags.parents !== undefined || flags.exclude !== undefined) {
    return `line ${ins.line}: COPY --parents/--exclude are not supported`;
  }
  const destPath = dest.startsWith("/") ? mapAbsolute(dest, work) : join(cwd, dest);
  if (destPath === null) return `line ${ins.line}: COPY to ${dest}, outside the WORKDIR`;
  const intoDir = dest.endsWith("/") || sources.length > 1;
  for (let source of sources) {
    source = cleanPath(source.replace(/^\/+/, ""));
    let roots;
    if (isGlob(source)) {
      const re = patternRegex(source);
      const depth = source.split("/").length;
      roots = [...new Set(ctx.files.map((f) => f.split("/").slice(0, depth).join("/")).filter((p) => re.test(p)))];
    } else roots = [source];
    let copied = 0;
    for (const src of roots) {
      const under = src === "." ? ctx.files : ctx.files.filter((f) => f.startsWith(`${src}/`));
      if (ctx.files.includes(src)) {
        const target = intoDir || (isGlob(source) && roots.length > 1) ? join(destPath, basename(src)) : destPath;
        copyOne(ctx.root, src, target);
        copied += 1;
      } else {
        for (const f of under) {
          copyOne(ctx.root, f, join(destPath, src === "." ? f : f.slice(src.length + 1)));
          copied += 1;
        }
      }
    }
    if (copied === 0) {
      return `line ${ins.line}: COPY ${source}: not in the build context (missing, or excluded by .dockerignore)`;
    }
  }
  return null;
}

function copyOne(root, rel, target) {
  mkdirSync(dirname(target), { recursive: true });
  const from = join(root, rel);
  if (lstatSync(from).isSymbolicLink()) symlinkSync(readlinkSync(from), target);
  else copyFileSync(from, target);
}

let workdirRoot = null;
function mapAbsolute(path, work) {
  const p = cleanPath(path);
  if (workdirRoot === null) return null;
  if (p === workdirRoot) return work;
  if (p.startsWith(`${workdirRoot}/`)) return join(work, p.slice(workdirRoot.length + 1));
  return null;
}

function runRun(ins, cwd, env, log) {
  let commands;
  let script;
  if (ins.text.trimStart().startsWith("[")) {
    const argv = JSON.parse(ins.text);
    commands = [argv.join(" ")];
    script = argv.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
  } else {
    commands = ins.text.split(/&&|;|\|\|/).map((c) => c.trim()).filter(Boolean);
    script = ins.text;
  }
  const refused = checkRun(commands);
  if (refused) return { error: `line ${ins.line}: ${refused}` };
  const run = spawnSync("bash", ["-c", `${PRELUDE}\n${script}`], { cwd, env, encoding: "utf8", maxBuffer: 256 << 20 });
  log.push(`---- RUN (line ${ins.line}) ${ins.text}\n${run.stdout}${run.stderr}`);
  if (run.status !== 0) return { error: `line ${ins.line}: RUN failed (exit ${run.status})`, output: `${run.stdout}${run.stderr}` };
  return {};
}

// The first errors of a failed RUN (cargo's first error names the missing file; the ones
// after it are consequences), or its last lines when there is no `error`.
function firstErrors(output) {
  const lines = output.trimEnd().split("\n");
  const at = lines.findIndex((l) => /^error\b/.test(l));
  return (at >= 0 ? lines.slice(at, at + 30) : lines.slice(-30)).join("\n");
}

function versionCmp(a, b) {
  const x = a.split(".").map(Number);
  const y = b.split(".").map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

// The packages the binary is built from: normal and build dependencies of the root
// package, for Linux (the image's platform), from the locked graph.
function lockedPackagesAbove(work, toolchain, env) {
  const meta = spawnSync(
    "cargo",
    ["metadata", "--locked", "--offline", "--format-version", "1", "--filter-platform", "x86_64-unknown-linux-gnu"],
    { cwd: work, env, encoding: "utf8", maxBuffer: 256 << 20 },
  );
  if (meta.status !== 0) return { error: `cargo metadata failed: ${meta.stderr.trim()}` };
  const m = JSON.parse(meta.stdout);
  const nodes = new Map(m.resolve.nodes.map((n) => [n.id, n]));
  const packages = new Map(m.packages.map((p) => [p.id, p]));
  const seen = new Set();
  const stack = [m.resolve.root];
  while (stack.length) {
    const id = stack.pop();
    if (seen.has(id)) continue;
    seen.add(id);
    for (const dep of nodes.get(id)?.deps ?? []) {
      if (dep.dep_kinds.some((k) => k.kind === null || k.kind === "build")) stack.push(dep.pkg);
    }
  }
  const above = [...seen]
    .map((id) => packages.get(id))
    .filter((p) => p.rust_version && versionCmp(p.rust_version, toolchain) > 0)
    .map((p) => `${p.name} ${p.version} (rust-version ${p.rust_version})`);
  return { count: seen.size, above };
}

// Runs the whole check once. Returns { ok, messages, log, detail }. Static findings are
// recorded and the build goes on, so that one run names every problem; a failed COPY or
// RUN ends it, as it ends a docker build.
export function checkImageContext({ root, dockerfile, dockerignore, work, env }) {
  const messages = [];
  const log = [];
  let failed = 0;
  const ok = (m) => messages.push(`ok    ${m}`);
  const problem = (m) => {
    failed += 1;
    messages.push(`FAIL  ${m}`);
  };
  const stop = (m, detail) => {
    problem(m);
    return { ok: false, messages, log, detail };
  };
  workdirRoot = null;

  const wrongMatches = matcherErrors();
  if (wrongMatches.length > 0) return stop(`.dockerignore matching differs from Docker's: ${wrongMatches.join("; ")}`);
  ok(`.dockerignore matching agrees with Docker's on ${MATCHER_CASES.length} cases`);

  let ctx;
  try {
    const patterns = readDockerignore(readFileSync(dockerignore, "utf8"));
    ctx = { root, ...contextFiles(root, patterns) };
  } catch (e) {
    return stop(`build context: ${e.message}`);
  }
  ok(`build context: ${ctx.files.length} files, ${(ctx.bytes / 1024).toFixed(0)} KiB let through by .dockerignore`);

  const stages = parseDockerfile(readFileSync(dockerfile, "utf8"));
  if (stages.length === 0) return stop("the Dockerfile has no FROM");
  const final = stages[stages.length - 1];
  const fromStages = final.body
    .filter((i) => i.keyword === "COPY" && copyArgs(i.text).flags.from !== undefined)
    .map((i) => ({ ins: i, ...copyArgs(i.text) }));
  const buildStages = stages.filter((s) => s !== final && fromStages.some((c) => c.flags.from === s.name));
  if (buildStages.length !== 1) {
    return stop(`expected the final stage to COPY --from exactly one build stage, found ${buildStages.map((s) => s.name).join(", ") || "none"}`);
  }
  const build = buildStages[0];

  // The builder's toolchain is the crate's rust-version (major.minor).
  const manifest = readFileSync(join(root, "Cargo.toml"), "utf8");
  const rustVersion = /^rust-version\s*=\s*"([^"]+)"/m.exec(manifest)?.[1];
  const image = /^(?:docker\.io\/)?(?:library\/)?rust:(\d+\.\d+)(?:\.\d+)?(?:-[a-z0-9.-]+)?(?:@sha256:[0-9a-f]{64})?$/.exec(build.image);
  const minor = (v) => v.split(".").slice(0, 2).join(".");
  if (!rustVersion) problem("Cargo.toml has no rust-version");
  else if (!image || image[1] !== minor(rustVersion)) {
    problem(`the build stage is FROM ${build.image}; it must be rust:${minor(rustVersion)}-<variant> (Cargo.toml's rust-version), so the image builds with the toolchain the crate declares`);
  } else ok(`build stage FROM ${build.image}: the crate's rust-version ${rustVersion}`);

  let cwd = work;
  const runEnv = { ...env };
  let lastBins = [];
  for (const ins of build.body) {
    if (ins.keyword === "WORKDIR") {
      const p = words(ins.text)[0];
      if (workdirRoot === null) {
        if (!p.startsWith("/")) return stop(`line ${ins.line}: the first WORKDIR must be absolute`);
        workdirRoot = cleanPath(p);
        cwd = work;
      } else {
        const mapped = p.startsWith("/") ? mapAbsolute(p, work) : join(cwd, p);
        if (mapped === null) return stop(`line ${ins.line}: WORKDIR ${p} is outside the first WORKDIR`);
        cwd = mapped;
      }
      mkdirSync(cwd, { recursive: true });
    } else if (ins.keyword === "COPY" || ins.keyword === "ADD") {
      if (workdirRoot === null) return stop(`line ${ins.line}: COPY before any WORKDIR is not supported`);
      const error = runCopy(ins, ctx, work, cwd);
      if (error) return stop(error);
      ok(`${ins.keyword} ${ins.text}`);
    } else if (ins.keyword === "RUN") {
      if (/\bcargo\s+build\b/.test(ins.text)) lastBins = [...ins.text.matchAll(/--bin[ =](\S+)/g)].map((m) => m[1]);
      const r = runRun(ins, cwd, runEnv, log);
      if (r.error) return stop(r.error, firstErrors(r.output ?? ""));
      ok(`RUN (line ${ins.line}) ${ins.text.length > 90 ? `${ins.text.slice(0, 87)}...` : ins.text}`);
    } else if (ins.keyword === "ENV") {
      for (const [k, ...v] of words(ins.text).map((w) => w.split("="))) runEnv[k] = v.join("=");
    } else if (!["LABEL", "ARG", "SHELL", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "STOPSIGNAL", "VOLUME"].includes(ins.keyword)) {
      return stop(`line ${ins.line}: ${ins.keyword} in the build stage is not supported by this check`);
    }
  }

  // The final stage copies the binary the build stage built.
  const wrong = fromStages.flatMap((c) =>
    c.sources
      .filter((src) => {
        const m = /^(.*)\/target\/release\/([^/]+)$/.exec(cleanPath(src));
        return !m || m[1] !== workdirRoot || !lastBins.includes(m[2]);
      })
      .map((src) => `line ${c.ins.line}: ${src}`),
  );
  if (wrong.length > 0) {
    problem(`the final stage copies ${wrong.join(", ")}, but the build stage builds ${lastBins.map((b) => `${workdirRoot}/target/release/${b}`).join(", ") || "no --bin"}`);
  } else ok(`the final stage copies the binary the build stage builds (${lastBins.join(", ")})`);

  if (rustVersion) {
    const locked = lockedPackagesAbove(work, rustVersion, runEnv);
    if (locked.error) problem(locked.error);
    else if (locked.above.length > 0) {
      problem(`locked dependencies of the binary need a newer Rust than the rust-version ${rustVersion}: ${locked.above.join("; ")}`);
    } else ok(`none of the ${locked.count} locked packages the binary is built from needs Rust newer than ${rustVersion}`);
  }
  return { ok: failed === 0, messages, log };
}

// ---- command line ------------------------------------------------------------------------

function arg(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const root = resolve(arg("--root") ?? ".");
  const dockerfile = resolve(arg("--dockerfile") ?? join(root, "deploy/Dockerfile"));
  const dockerignore = resolve(arg("--dockerignore") ?? join(root, ".dockerignore"));
  const workBase = resolve(arg("--work") ?? mkdtempSync(join(tmpdir(), "image-context-")));
  const controls = process.argv.includes("--controls");
  const env = { ...process.env, IMAGE_CONTEXT_CARGO: process.env.IMAGE_CONTEXT_CARGO ?? "check" };

  const runOnce = (label, files) => {
    const work = join(workBase, label);
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    return checkImageContext({ root, ...files, work, env });
  };

  const logFile = resolve(arg("--log") ?? join(workBase, "build.log"));
  const main = runOnce("context", { dockerfile, dockerignore });
  for (const m of main.messages) console.log(m);
  writeFileSync(logFile, main.log.join("\n"));
  if (!main.ok) {
    if (main.detail) console.log(main.detail.replace(/^/gm, "      "));
    console.log(`image context: FAILED (cargo's output: ${logFile})`);
    process.exit(1);
  }

  let failures = 0;
  if (controls) {
    // Broken on purpose; each must fail, and for the reason named.
    const variants = join(workBase, "variants");
    mkdirSync(variants, { recursive: true });
    const ignoreText = readFileSync(dockerignore, "utf8");
    const dockerText = readFileSync(dockerfile, "utf8");
    const noIgnore = ignoreText.split("\n").filter((l) => !/migrations-embedded/.test(l) || l.trim().startsWith("#")).join("\n");
    const noCopy = dockerText.split("\n").filter((l) => !/^\s*COPY\s+migrations-embedded\b/.test(l)).join("\n");
    const cases = [
      {
        what: ".dockerignore without migrations-embedded/ fails at its COPY",
        changed: noIgnore !== ignoreText,
        files: { dockerfile, dockerignore: join(variants, "dockerignore") },
        write: () => writeFileSync(join(variants, "dockerignore"), noIgnore),
        expect: (r) => r.messages.some((m) => m.startsWith("FAIL") && m.includes("COPY migrations-embedded: not in the build context")),
      },
      {
        what: "a Dockerfile that does not COPY migrations-embedded/ fails to compile",
        changed: noCopy !== dockerText,
        files: { dockerfile: join(variants, "Dockerfile"), dockerignore },
        write: () => writeFileSync(join(variants, "Dockerfile"), noCopy),
        expect: (r) => r.messages.some((m) => m.startsWith("FAIL") && m.includes("RUN failed")) && /migrations-embedded/.test(r.detail ?? ""),
      },
    ];
    for (const c of cases) {
      if (!c.changed) {
        console.log(`FAIL  control "${c.what}": the line to remove was not found; update the control`);
        failures += 1;
        continue;
      }
      c.write();
      const r = runOnce("variant", c.files);
      if (!r.ok && c.expect(r)) console.log(`ok    control: ${c.what} (${r.messages.at(-1).replace(/^FAIL\s+/, "")})`);
      else {
        console.log(`FAIL  control: ${c.what}: ${r.ok ? "it passed" : r.messages.at(-1)}`);
        if (r.detail) console.log(r.detail.replace(/^/gm, "      "));
        failures += 1;
      }
    }
  }
  console.log(failures === 0 ? "image context: all passed" : `image context: ${failures} failed`);
  process.exit(failures === 0 ? 0 : 1);
}
