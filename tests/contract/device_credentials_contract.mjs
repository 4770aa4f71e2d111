// Contract test in another language (issue 13): a Node.js client built only from the .proto
// files creates a device's broker credential (the secret comes back once, the MQTT username
// is the serial), lists it (never a secret), revokes it, and is refused a second live one.
//
// Usage: node device_credentials_contract.mjs <host:port>   with LIFEBOX_CONTRACT_EMAIL,
// _PASSWORD, _DEVICE_ID and _SERIAL in the environment. Prints one JSON line (never the
// secret); exits non-zero on any mismatch.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const require = createRequire(path.join(root, "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const definition = protoLoader.loadSync(
  ["lifebox/v1/auth.proto", "lifebox/v1/devices.proto"],
  { includeDirs: [path.join(root, "protos")], keepCase: true, longs: String, enums: String, defaults: true },
);
const api = grpc.loadPackageDefinition(definition).lifebox.v1;
const address = process.argv[2];
const auth = new api.AuthService(address, grpc.credentials.createInsecure());
const devices = new api.DeviceService(address, grpc.credentials.createInsecure());

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

const created = await call(devices, "CreateDeviceCredential", { device_id }, metadata);
const secret = created.secret;
if (typeof secret !== "string" || secret.length < 43) fail("no secret in the create reply");
if (created.credential.username !== env.LIFEBOX_CONTRACT_SERIAL) fail("the username is not the serial");
if (created.credential.kind !== "CREDENTIAL_KIND_PASSWORD") fail(`kind ${created.credential.kind}`);

const again = await code(call(devices, "CreateDeviceCredential", { device_id }, metadata));
if (again !== grpc.status.ALREADY_EXISTS) fail(`a second live credential gave ${again}`);

const listed = await call(devices, "ListDeviceCredentials", { device_id }, metadata);
const text = JSON.stringify(listed);
if (text.includes(secret)) fail("the list carries the secret");
if (listed.credentials.some((c) => "secret" in c || "password_hash" in c)) fail("a secret field in the list");
if (listed.credentials.length !== 1 || listed.credentials[0].id !== created.credential.id) fail("list mismatch");

const revoked = await call(
  devices, "RevokeDeviceCredential", { device_id, credential_id: created.credential.id }, metadata,
);
if (!revoked.credential.revoke_time) fail("no revoke_time");
const after = await call(devices, "ListDeviceCredentials", { device_id }, metadata);
if (!after.credentials[0].revoke_time) fail("the list does not show the revocation");

console.log(JSON.stringify({
  ok: true,
  credential: created.credential.id,
  username: created.credential.username,
  secret_length: secret.length,
  second_live: again,
  listed: after.credentials.length,
}));
auth.close();
devices.close();
