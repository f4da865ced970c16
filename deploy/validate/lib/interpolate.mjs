// Compose-file variable interpolation, as the compose specification defines it:
// $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error},
// ${VAR:+replacement}, ${VAR+replacement}, and $$ for a literal $.
const PATTERN =
  /\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*)|(\{[^}]*\}?))/g;

export class InterpolationError extends Error {}

export function interpolateString(text, env, where) {
  return text.replace(PATTERN, (match, dollar, braced, op, arg, bare, bad) => {
    if (dollar) return "$";
    if (bad !== undefined) throw new InterpolationError(`${where}: invalid interpolation ${match}`);
    const name = braced ?? bare;
    const value = env[name];
    const set = value !== undefined;
    const nonEmpty = set && value !== "";
    if (arg !== undefined && arg.includes("${")) {
      throw new InterpolationError(`${where}: nested interpolation is not supported here: ${match}`);
    }
    switch (op) {
      case undefined:
        return value ?? "";
      case ":-":
        return nonEmpty ? value : arg;
      case "-":
        return set ? value : arg;
      case ":?":
        if (!nonEmpty) throw new InterpolationError(`${where}: ${name}: ${arg || "must be set"}`);
        return value;
      case "?":
        if (!set) throw new InterpolationError(`${where}: ${name}: ${arg || "must be set"}`);
        return value;
      case ":+":
        return nonEmpty ? arg : "";
      case "+":
        return set ? arg : "";
      default:
        throw new InterpolationError(`${where}: invalid interpolation ${match}`);
    }
  });
}

/** A copy of a parsed compose document with every string value interpolated. */
export function interpolate(node, env, where = "") {
  if (typeof node === "string") return interpolateString(node, env, where || "/");
  if (Array.isArray(node)) return node.map((item, i) => interpolate(item, env, `${where}/${i}`));
  if (node && typeof node === "object") {
    return Object.fromEntries(
      Object.entries(node).map(([key, value]) => [key, interpolate(value, env, `${where}/${key}`)]),
    );
  }
  return node;
}
