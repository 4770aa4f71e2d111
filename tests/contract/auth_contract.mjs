// Contract test in another language: a Node.js client built only from the .proto files
// (@grpc/grpc-js + @grpc/proto-loader) signs in, calls GetMe, and meets tenant isolation.
//
// Usage: node auth_contract.mjs <host:port>   with LIFEBOX_CONTRACT_EMAIL, _PASSWORD and
// _OTHER_CLIENT_ID in the environment. Prints one JSON line; exits non-zero on any mismatch.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const require = createRequire(path.join(root, "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const definition = protoLoader.loadSync(
  ["lifebox/v1/auth.proto", "lifebox/v1/clients.proto"],
  { includeDirs: [path.join(root, "protos")], keepCase: true, longs: String, enums: String, defaults: true },
);
const api = grpc.loadPackageDefinition(definition).lifebox.v1;
const address = process.argv[2];
const auth = new api.AuthService(address, grpc.credentials.createInsecure());
const clients = new api.ClientService(address, grpc.credentials.createInsecure());

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

const env = process.env;
const login = await call(auth, "Login", {
  email: env.LIFEBOX_CONTRACT_EMAIL,
  password: env.LIFEBOX_CONTRACT_PASSWORD,
});
if (login.tokens.token_type !== "Bearer" || !login.tokens.access_token) fail("no access token");

const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${login.tokens.access_token}`);
const me = await call(auth, "GetMe", {}, metadata);
if (me.user.email.toLowerCase() !== env.LIFEBOX_CONTRACT_EMAIL.toLowerCase()) fail("GetMe is someone else");

let isolation = null;
try {
  await call(clients, "GetClient", { id: env.LIFEBOX_CONTRACT_OTHER_CLIENT_ID }, metadata);
} catch (error) {
  isolation = { code: error.code, details: error.details };
}
if (!isolation || isolation.code !== grpc.status.NOT_FOUND) fail(`expected NOT_FOUND, got ${JSON.stringify(isolation)}`);

let anonymous = null;
try {
  await call(auth, "GetMe", {});
} catch (error) {
  anonymous = error.code;
}
if (anonymous !== grpc.status.UNAUTHENTICATED) fail(`expected UNAUTHENTICATED, got ${anonymous}`);

console.log(JSON.stringify({ ok: true, user: me.user.id, role: me.user.role, isolation }));
auth.close();
clients.close();
