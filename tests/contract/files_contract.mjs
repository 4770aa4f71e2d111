// Contract test in another language (issue 17): a Node.js client built only from the .proto
// files uploads a PNG by client streaming (metadata, then chunks), reads it back whole and
// by range over a server stream, is refused an ELF executable claiming to be image/png
// (INVALID_ARGUMENT naming metadata.content_type), reads the quota, deletes the file and
// then meets NOT_FOUND for it, and NOT_FOUND for another tenant's file.
//
// Usage: node files_contract.mjs <host:port>   with LIFEBOX_CONTRACT_EMAIL, _PASSWORD and
// _OTHER_FILE_ID in the environment. Prints one JSON line; exits non-zero on any mismatch.
import crypto from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const require = createRequire(path.join(root, "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const definition = protoLoader.loadSync(
  ["lifebox/v1/auth.proto", "lifebox/v1/files.proto"],
  { includeDirs: [path.join(root, "protos")], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const api = grpc.loadPackageDefinition(definition).lifebox.v1;
const address = process.argv[2];
const auth = new api.AuthService(address, grpc.credentials.createInsecure());
const files = new api.FileService(address, grpc.credentials.createInsecure());
const deadline = () => ({ deadline: new Date(Date.now() + 10_000) });

function call(method, request, metadata) {
  return new Promise((resolve, reject) => {
    const client = method === "Login" ? auth : files;
    client[method](request, metadata ?? new grpc.Metadata(), deadline(), (error, reply) =>
      error ? reject(error) : resolve(reply),
    );
  });
}

function upload(metadata, meta, bytes, chunk = 4096) {
  return new Promise((resolve, reject) => {
    const stream = files.UploadFile(metadata, deadline(), (error, reply) =>
      error ? reject(error) : resolve(reply),
    );
    stream.write({ metadata: meta });
    for (let at = 0; at < bytes.length; at += chunk) stream.write({ chunk: bytes.subarray(at, at + chunk) });
    stream.end();
  });
}

function download(metadata, request) {
  return new Promise((resolve, reject) => {
    const parts = [];
    let file = null;
    const stream = files.DownloadFile(request, metadata, deadline());
    stream.on("data", (message) => {
      if (message.file) file = message.file;
      parts.push(message.data);
    });
    stream.on("error", reject);
    stream.on("end", () => resolve({ file, bytes: Buffer.concat(parts) }));
  });
}

async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    const details = error.metadata?.get("grpc-status-details-bin")?.[0];
    return { code: error.code, details: details ? details.toString("latin1") : "" };
  }
  return { code: grpc.status.OK, details: "" };
}

function fail(message) {
  console.log(JSON.stringify({ ok: false, message }));
  process.exit(1);
}

const env = process.env;
const login = await call("Login", { email: env.LIFEBOX_CONTRACT_EMAIL, password: env.LIFEBOX_CONTRACT_PASSWORD });
const md = new grpc.Metadata();
md.set("authorization", `Bearer ${login.tokens.access_token}`);

const png = Buffer.concat([Buffer.from("89504e470d0a1a0a0000000d49484452", "hex"), crypto.randomBytes(20_000)]);
const { file } = await upload(md, { name: "node.png", content_type: "image/png", access_level: "FILE_ACCESS_LEVEL_TENANT" }, png);
const sha256 = crypto.createHash("sha256").update(png).digest("hex");
if (file.sha256 !== sha256) fail(`sha256 ${file.sha256} != ${sha256}`);
if (Number(file.size_bytes) !== png.length) fail(`size ${file.size_bytes}`);

const whole = await download(md, { id: file.id });
if (!whole.bytes.equals(png)) fail("the download differs from the upload");
const range = await download(md, { id: file.id, offset: 1000, length: 5000 });
if (!range.bytes.equals(png.subarray(1000, 6000))) fail("the range differs");

const elf = Buffer.concat([Buffer.from("7f454c46020101000000000000000000", "hex"), Buffer.alloc(10_000)]);
const refused = await failure(upload(md, { name: "evil.png", content_type: "image/png" }, elf));
const quota = await call("GetFileQuota", {}, md);
const listed = await call("ListFiles", { page_size: 10 }, md);
await call("DeleteFile", { id: file.id }, md);
const gone = await failure(call("GetFile", { id: file.id }, md));
const other = await failure(call("GetFile", { id: env.LIFEBOX_CONTRACT_OTHER_FILE_ID }, md));

console.log(
  JSON.stringify({
    ok: true,
    sha256: file.sha256,
    access_level: file.access_level,
    range_bytes: range.bytes.length,
    refused: refused.code,
    refused_field: refused.details.includes("metadata.content_type"),
    used_bytes: Number(quota.used_bytes),
    listed: listed.files.map((f) => f.id),
    gone: gone.code,
    other: other.code,
  }),
);
