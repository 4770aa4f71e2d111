// Contract test in another language: a Node.js client built only from the .proto files
// (@grpc/grpc-js + @grpc/proto-loader) creates a calculation formula (and meets the CEL
// checker), updates, lists, disables and tries it on stored readings, and meets tenant
// isolation.
//
// Usage: node calculations_contract.mjs <host:port>   with LIFEBOX_CONTRACT_EMAIL, _PASSWORD,
// _DEVICE_ID, _OTHER_FORMULA_ID and _SINCE (RFC 3339) in the environment. Prints one JSON
// line; exits non-zero on any mismatch.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const require = createRequire(path.join(root, "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const definition = protoLoader.loadSync(["lifebox/v1/auth.proto", "lifebox/v1/calculations.proto"], {
  includeDirs: [path.join(root, "protos")], keepCase: true, longs: String, enums: String, defaults: true,
});
const api = grpc.loadPackageDefinition(definition).lifebox.v1;
const address = process.argv[2];
const auth = new api.AuthService(address, grpc.credentials.createInsecure());
const calculations = new api.CalculationService(address, grpc.credentials.createInsecure());

function call(client, method, request, metadata = new grpc.Metadata()) {
  const deadline = new Date(Date.now() + 10_000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

async function codeOf(promise) {
  try {
    await promise;
    return 0;
  } catch (error) {
    return error.code;
  }
}

function fail(message) {
  console.log(JSON.stringify({ ok: false, message }));
  process.exit(1);
}

const env = process.env;
const login = await call(auth, "Login", { email: env.LIFEBOX_CONTRACT_EMAIL, password: env.LIFEBOX_CONTRACT_PASSWORD });
const md = new grpc.Metadata();
md.set("authorization", `Bearer ${login.tokens.access_token}`);

const formula = { name: "temperature_f", expression: "temperature_c * 9 / 5 + 32", unit: "degF" };
const badCode = await codeOf(call(calculations, "CreateFormula", { formula: { ...formula, expression: "size(x)" } }, md));
if (badCode !== grpc.status.INVALID_ARGUMENT) fail(`a bad expression gave ${badCode}`);

const created = (await call(calculations, "CreateFormula", { formula }, md)).formula;
if (created.scope !== "FORMULA_SCOPE_TENANT" || !created.enabled || created.version !== "1") {
  fail(`unexpected formula ${JSON.stringify(created)}`);
}
const got = (await call(calculations, "GetFormula", { formula_id: created.id }, md)).formula;
if (got.expression !== formula.expression) fail("GetFormula differs");
const updated = (await call(calculations, "UpdateFormula", {
  formula: { id: created.id, device_id: env.LIFEBOX_CONTRACT_DEVICE_ID },
  update_mask: { paths: ["device_id"] },
}, md)).formula;
const listed = await call(calculations, "ListFormulas", {}, md);
const since = { seconds: String(Math.floor(Date.parse(env.LIFEBOX_CONTRACT_SINCE) / 1000)), nanos: 0 };
const tried = await call(calculations, "TestFormula", { formula_id: created.id, device_id: env.LIFEBOX_CONTRACT_DEVICE_ID, start_time: since }, md);
const disabled = (await call(calculations, "EnableFormula", { formula_id: created.id, enabled: false }, md)).formula;
const isolation = await codeOf(call(calculations, "GetFormula", { formula_id: env.LIFEBOX_CONTRACT_OTHER_FORMULA_ID }, md));
await call(calculations, "DeleteFormula", { formula_id: created.id }, md);
const deleted = await codeOf(call(calculations, "GetFormula", { formula_id: created.id }, md));

console.log(JSON.stringify({
  ok: true,
  bad: badCode,
  scope: updated.scope,
  versions: [created.version, updated.version, disabled.version].map(Number),
  formulas: listed.formulas.map((f) => f.name),
  tested: tried.points.map((p) => p.value),
  skipped: tried.skipped,
  isolation,
  deleted,
}));
