// Contract test in another language (issue 14): a Node.js client built only from the .proto
// files lists the platform's command templates, sends a command with parameters and an
// idempotency key (a repeat returns the same command), is refused bad parameters with a
// field path, cancels the pending command, reads its trail and sees FAILED_PRECONDITION on a
// second cancel.
//
// Usage: node commands_contract.mjs <host:port>   with LIFEBOX_CONTRACT_EMAIL, _PASSWORD and
// _DEVICE_ID in the environment. Prints one JSON line; exits non-zero on any mismatch.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const require = createRequire(path.join(root, "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const definition = protoLoader.loadSync(
  ["lifebox/v1/auth.proto", "lifebox/v1/commands.proto"],
  { includeDirs: [path.join(root, "protos")], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const api = grpc.loadPackageDefinition(definition).lifebox.v1;
const address = process.argv[2];
const auth = new api.AuthService(address, grpc.credentials.createInsecure());
const commands = new api.CommandService(address, grpc.credentials.createInsecure());

function call(client, method, request, metadata = new grpc.Metadata()) {
  const deadline = new Date(Date.now() + 10_000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

function fail(message) {
  console.log(JSON.stringify({ ok: false, message }));
  process.exit(1);
}

async function code(promise) {
  try {
    await promise;
  } catch (error) {
    return error.code;
  }
  return grpc.status.OK;
}

const env = process.env;
const login = await call(auth, "Login", {
  email: env.LIFEBOX_CONTRACT_EMAIL,
  password: env.LIFEBOX_CONTRACT_PASSWORD,
});
const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${login.tokens.access_token}`);
const device_id = env.LIFEBOX_CONTRACT_DEVICE_ID;

const templates = await call(commands, "ListCommandTemplates", { page_size: 500 }, metadata);
const reboot = templates.templates.find((t) => t.code === "reboot");
if (!reboot) fail("no reboot template");
// google.protobuf.Struct comes from protobufjs's bundled descriptors: camelCase names.
const struct = (value) => ({ fields: Object.fromEntries(Object.entries(value).map(([k, v]) => [k, { numberValue: v }])) });
const request = { device_id, template_code: "reboot", parameters: struct({ delay_s: 5 }), idempotency_key: "node-1" };
const sent = await call(commands, "SendCommand", request, metadata);
const again = await call(commands, "SendCommand", request, metadata);
if (again.command.id !== sent.command.id) fail("the idempotency key sent a second command");
if (sent.command.status !== "COMMAND_STATUS_PENDING") fail(`status ${sent.command.status}`);
let badField = null;
try {
  await call(commands, "SendCommand", { device_id, template_code: "reboot", parameters: struct({ delay_s: -1 }) }, metadata);
} catch (error) {
  badField = error.code === grpc.status.INVALID_ARGUMENT ? error.details : null;
}
const cancelled = await call(commands, "CancelCommand", { id: sent.command.id }, metadata);
const trail = await call(commands, "ListCommandExecutions", { command_id: sent.command.id }, metadata);
const second = await code(call(commands, "CancelCommand", { id: sent.command.id }, metadata));
console.log(
  JSON.stringify({
    ok: true,
    command: sent.command.id,
    delay_s: sent.command.parameters.fields.delay_s.numberValue,
    bad: badField,
    cancelled: cancelled.command.status,
    trail: trail.executions.map((e) => e.to_status),
    second_cancel: second,
  }),
);
