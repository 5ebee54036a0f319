#!/usr/bin/env node
/*
 * The Cosmos DB stand-in (@vercel/cosmosdb-server, plain HTTP) with its data optionally kept in a file.
 *
 *   node scripts/cosmos_server.js --host 127.0.0.1 --port 8081 [--data .local/cosmos/index.json]
 *                                 [--save-interval SECONDS (default 30)]
 *
 * Without --data it is the package's own `cosmosdb-server --no-ssl`: everything in memory.
 *
 * With --data FILE:
 * - at start, before the port opens, every database, collection (its definition: partitionKey,
 *   indexingPolicy, uniqueKeyPolicy, ...), user-defined function and document is loaded from FILE
 *   exactly as stored (_rid, _self, _etag, _ts included, in the stand-in's own order), and so are the
 *   stand-in's resource-id counters, so new documents never reuse an _rid.  A FILE that cannot be read
 *   or restored is renamed to FILE.corrupt-<UTC timestamp> and the server starts empty.
 * - FILE.status is (re)written before the port opens: {"result": "loaded" | "loaded-unclean" |
 *   "missing" | "corrupt", "documents": N, ...}.  "loaded-unclean" means FILE.dirty was present:
 *   the previous run changed data after FILE was written and did not shut down cleanly, so FILE may
 *   lack up to 30 s of its writes.
 * - on SIGTERM / SIGINT the snapshot is written (FILE.tmp, fsync, rename, fsync of the directory),
 *   FILE.dirty is removed and the process exits 0 (1 if the snapshot could not be written).
 * - every 30 s (--save-interval) the snapshot is written when anything changed since the last one;
 *   FILE.dirty is created at the first change after a load or clean save and stays until a clean
 *   shutdown.  Changes are counted in Items._set and Items.delete, which every write goes through.
 *
 * Snapshot format (version 1): one JSON document, one item per line, items in the stand-in's order:
 *
 *   {"format": "cosmosdb-server-snapshot", "version": 1, "savedAt": ISO time,
 *    "reason": "periodic" | "shutdown on SIGTERM" | ..., "databases": {"ridCount": N, "items": [
 *      {"resource": {database as stored},
 *       "collections": {"ridCount": N, "items": [
 *         {"resource": {collection as stored: id, partitionKey, indexingPolicy, _rid, _self, _etag, _ts, ...},
 *          "userDefinedFunctions": {"ridCount": N, "items": [{udf as stored}, ...]},
 *          "documents": {"ridCount": N, "items": [{document as stored}, ...]}}]}}]}}
 *
 * ridCount is the stand-in's counter for the next _rid of that kind (it never goes down on deletes).
 * Partition key ranges are not stored: the stand-in recreates its single range with each collection.
 *
 * The stand-in keeps its state in an in-memory Account (lib/account): account.databases is an
 * Items collection (lib/account/items.js) whose _data Map (rid -> Item, in insertion order) holds
 * Database objects; each has .collections (Collection objects, each with .documents and
 * .userDefinedFunctions).  Items._set(resource) stores a resource as given and indexes it;
 * Items._ridCount numbers the next _rid.  The package creates its Account when the server starts
 * listening, so this script swaps lib/account's export for a subclass that adopts the databases
 * loaded beforehand.
 */
"use strict";

const { AsyncLocalStorage } = require("async_hooks");
const fs = require("fs");
const path = require("path");

const { createHttpServer } = require("@vercel/cosmosdb-server");
const accountModule = require("@vercel/cosmosdb-server/lib/account");
const Items = require("@vercel/cosmosdb-server/lib/account/items").default;

const FORMAT = "cosmosdb-server-snapshot";
const VERSION = 1;
const DEFAULT_SAVE_INTERVAL_S = 30;
const WRITE_CHUNK = 1 << 20;

function log(message) {
  console.log(`cosmos_server: ${message}`);
}

function warn(message) {
  console.error(`cosmos_server: WARNING: ${message}`);
}

function usage(message) {
  if (message) console.error(`cosmos_server: ${message}`);
  const text = "Usage: node scripts/cosmos_server.js [--host HOST] [--port PORT] [--data FILE [--save-interval S]]";
  if (message) {
    console.error(text);
    process.exit(2);
  }
  console.log(text);
  process.exit(0);
}

function parseArgs(argv) {
  const args = { host: "127.0.0.1", port: 8081, data: null, saveInterval: DEFAULT_SAVE_INTERVAL_S };
  for (let i = 0; i < argv.length; i += 1) {
    const key = argv[i];
    if (key === "-h" || key === "--help") usage();
    const value = argv[i + 1];
    if (value === undefined) usage(`${key} needs a value`);
    i += 1;
    switch (key) {
      case "--host":
        args.host = value;
        break;
      case "-p":
      case "--port":
        args.port = Number(value);
        if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) usage(`invalid port ${value}`);
        break;
      case "--data":
        args.data = path.resolve(value);
        break;
      case "--save-interval":
        args.saveInterval = Number(value);
        if (!(args.saveInterval > 0)) usage(`invalid --save-interval ${value}`);
        break;
      default:
        usage(`unknown option ${key}`);
    }
  }
  return args;
}

function listen(server, args) {
  server.listen(args.port, args.host, () => {
    const { port } = server.address();
    console.log(`Ready to accept HTTP connections at ${args.host}:${port}`);
  });
}

// -- snapshot: write ---------------------------------------------------------------------------

/** Writes strings to a file descriptor in ~1 MB chunks. */
class ChunkWriter {
  constructor(fd) {
    this.fd = fd;
    this.parts = [];
    this.size = 0;
  }

  write(text) {
    this.parts.push(text);
    this.size += text.length;
    if (this.size >= WRITE_CHUNK) this.flush();
  }

  flush() {
    if (this.parts.length) fs.writeSync(this.fd, this.parts.join(""));
    this.parts = [];
    this.size = 0;
  }
}

function writeItems(out, items, key, writeItem) {
  out.write(`${JSON.stringify(key)}:{"ridCount":${items._ridCount},"items":[`);
  let first = true;
  for (const item of items._data.values()) {
    out.write(first ? "\n" : ",\n");
    first = false;
    writeItem(item);
  }
  out.write("]}");
}

/** The whole account as one JSON document (the format restoreSnapshot reads). */
function writeSnapshot(out, databases, reason) {
  const counts = { databases: 0, collections: 0, documents: 0 };
  out.write(
    `{"format":${JSON.stringify(FORMAT)},"version":${VERSION},` +
      `"savedAt":${JSON.stringify(new Date().toISOString())},"reason":${JSON.stringify(reason)},`
  );
  writeItems(out, databases, "databases", database => {
    counts.databases += 1;
    out.write(`{"resource":${JSON.stringify(database.read())},`);
    writeItems(out, database.collections, "collections", collection => {
      counts.collections += 1;
      out.write(`{"resource":${JSON.stringify(collection.read())},`);
      writeItems(out, collection.userDefinedFunctions, "userDefinedFunctions", udf => {
        out.write(JSON.stringify(udf.read()));
      });
      out.write(",");
      writeItems(out, collection.documents, "documents", doc => {
        counts.documents += 1;
        out.write(JSON.stringify(doc.read()));
      });
      out.write("}");
    });
    out.write("}");
  });
  out.write("}\n");
  out.flush();
  return counts;
}

/** Write the snapshot atomically: FILE.tmp, fsync, rename over FILE, fsync the directory. */
function saveSnapshot(file, databases, reason) {
  const started = process.hrtime.bigint();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, "w");
  let counts;
  try {
    counts = writeSnapshot(new ChunkWriter(fd), databases, reason);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  const dir = fs.openSync(path.dirname(file), "r");
  try {
    fs.fsyncSync(dir);
  } finally {
    fs.closeSync(dir);
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const bytes = fs.statSync(file).size;
  log(
    `saved ${counts.documents} documents (${counts.collections} collections, ${counts.databases} databases, ` +
      `${(bytes / 1e6).toFixed(1)} MB) to ${file} in ${seconds.toFixed(2)} s (${reason})`
  );
  return counts;
}

// -- snapshot: load ----------------------------------------------------------------------------

function defineFunction(body) {
  // As lib/account/user-defined-functions.js defines a UDF from its body.
  // eslint-disable-next-line no-new-func
  return new Function(`"use strict";return (${body})`)();
}

function checkItems(group, where) {
  if (!group || typeof group !== "object" || !Array.isArray(group.items)) {
    throw new Error(`${where}: expected {"ridCount": n, "items": [...]}`);
  }
  if (group.ridCount !== undefined && !Number.isInteger(group.ridCount)) {
    throw new Error(`${where}: ridCount is not an integer`);
  }
  return group.items;
}

function checkResource(resource, where) {
  if (!resource || typeof resource !== "object" || Array.isArray(resource)) {
    throw new Error(`${where}: not an object`);
  }
  if (typeof resource._rid !== "string" || resource.id === undefined) {
    throw new Error(`${where}: missing id or _rid`);
  }
  return resource;
}

/** Re-insert the items of one group exactly as stored, and restore its rid counter. */
function restoreItems(items, group, where, restoreChildren) {
  const list = checkItems(group, where);
  list.forEach((entry, i) => {
    // Databases and collections are stored as {"resource": ..., <children>}, other items as themselves.
    const resource = checkResource(restoreChildren ? (entry || {}).resource : entry, `${where}[${i}]`);
    if (items._data.has(resource._rid)) throw new Error(`${where}[${i}]: duplicate _rid ${resource._rid}`);
    items._set(resource);
    if (restoreChildren) restoreChildren(items._data.get(resource._rid), entry, `${where}[${i}]`);
  });
  // Never hand out an _rid that a stored item already has.
  items._ridCount = Math.max(items._ridCount, group.ridCount || 0, list.length);
  return list.length;
}

/** Load a parsed snapshot into `databases` (an empty lib/account/databases instance). */
function restoreSnapshot(snapshot, databases) {
  if (!snapshot || snapshot.format !== FORMAT) throw new Error(`not a ${FORMAT} file`);
  if (snapshot.version !== VERSION) throw new Error(`unsupported snapshot version ${snapshot.version}`);
  const counts = { databases: 0, collections: 0, documents: 0 };
  counts.databases = restoreItems(databases, snapshot.databases, "databases", (database, entry, where) => {
    counts.collections += restoreItems(
      database.collections,
      entry.collections,
      `${where}.collections`,
      (collection, collEntry, collWhere) => {
        restoreItems(collection.userDefinedFunctions, collEntry.userDefinedFunctions, `${collWhere}.udfs`);
        for (const udf of collection.userDefinedFunctions._data.values()) {
          const { id, body } = udf.read();
          collection.userDefinedFunctions.functions[id] = defineFunction(body);
        }
        counts.documents += restoreItems(collection.documents, collEntry.documents, `${collWhere}.documents`);
      }
    );
  });
  return counts;
}

function timestamp() {
  return new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

/** Load FILE into `databases`; returns the status written to FILE.status. */
function loadSnapshot(file, databases) {
  const started = process.hrtime.bigint();
  if (!fs.existsSync(file)) {
    log(`no snapshot at ${file}: starting empty`);
    return { result: "missing", documents: 0, collections: 0, databases: 0 };
  }
  let counts;
  try {
    counts = restoreSnapshot(JSON.parse(fs.readFileSync(file, "utf8")), databases);
  } catch (err) {
    const moved = `${file}.corrupt-${timestamp()}`;
    try {
      fs.renameSync(file, moved);
    } catch (renameErr) {
      warn(`could not rename ${file} to ${moved}: ${renameErr.message}`);
    }
    warn(`snapshot ${file} is unusable (${err.message}); moved it to ${moved} and starting empty`);
    return { result: "corrupt", documents: 0, collections: 0, databases: 0, corruptMovedTo: moved, error: err.message };
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  log(
    `loaded ${counts.documents} documents (${counts.collections} collections, ${counts.databases} databases) ` +
      `from ${file} in ${seconds.toFixed(2)} s`
  );
  if (fs.existsSync(`${file}.dirty`)) {
    warn(`${file}.dirty is present: the last run did not shut down cleanly and its last writes may be missing`);
    return { result: "loaded-unclean", ...counts, seconds };
  }
  return { result: "loaded", ...counts, seconds };
}

function writeStatus(file, status) {
  const tmp = `${file}.status.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify({ pid: process.pid, at: new Date().toISOString(), ...status })}\n`);
  fs.renameSync(tmp, `${file}.status`);
}

// -- main --------------------------------------------------------------------------------------

// -- single-partition queries read one partition, as in Cosmos DB ----------------------------------
//
// The stand-in evaluates every query over every document of the collection.  Cosmos DB runs a query
// that names its partition key (x-ms-documentdb-partitionkey, no cross-partition flag) in that
// partition only, so its cost does not grow with the rest of the container.  This gives the stand-in
// the same cost model: such a query is evaluated over the documents of that partition only.  Results
// are unchanged (the stand-in already refuses single-partition queries without the partition-key
// predicate), only the work is.

const partitionScope = new AsyncLocalStorage();

function scopeSinglePartitionQueries(server) {
  const listeners = server.listeners("request");
  server.removeAllListeners("request");
  server.on("request", (req, res) => {
    const header = req.headers["x-ms-documentdb-partitionkey"];
    const cross = String(req.headers["x-ms-documentdb-query-enablecrosspartition"] || "").toLowerCase() === "true";
    let partition = null;
    if (header && !cross) {
      try {
        const parsed = JSON.parse(header);
        if (Array.isArray(parsed) && parsed.length === 1 && typeof parsed[0] === "string") [partition] = parsed;
      } catch (err) {
        partition = null;
      }
    }
    partitionScope.run(partition, () => listeners.forEach(listener => listener.call(server, req, res)));
  });
  const originalQuery = Items.prototype.query;
  Items.prototype.query = function query(params, options) {
    const partition = partitionScope.getStore();
    if (partition === null || partition === undefined || !this._parent.read()) {
      return originalQuery.call(this, params, options);
    }
    // As Items.query, over the documents of one partition.
    const data = [];
    for (const item of this._data.values()) {
      const document = item.read();
      if (this._getPartition(document) === partition) data.push(document);
    }
    const parent = this._parent.read();
    const compositeIndexes = (parent.indexingPolicy ? parent.indexingPolicy.compositeIndexes : null) || [];
    try {
      return this._getQuery(params.query).exec(data, {
        parameters: params.parameters,
        udf: this._userDefinedFunctions(),
        maxItemCount: options.maxItemCount,
        continuation: options.continuation,
        compositeIndexes
      });
    } catch (err) {
      err.badRequest = true;
      throw err;
    }
  };
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  // keep-alive: without it the stand-in answers "Connection: close" and every operation pays a new
  // TCP connection (about a third of a STOW's index time); idle connections live 65 s.
  const server = createHttpServer({ keepAlive: true });
  server.keepAliveTimeout = 65000;
  server.headersTimeout = 66000;
  scopeSinglePartitionQueries(server);
  if (!args.data) {
    listen(server, args);
    return;
  }

  const file = args.data;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const OriginalAccount = accountModule.default;

  // Load into a scratch account's databases; the account the package creates on "listening" adopts them.
  let { databases } = new OriginalAccount(args.host, args.port);
  const status = loadSnapshot(file, databases);
  // After a failed load start from a clean slate: the half-restored items go with the old object.
  if (status.result === "corrupt") ({ databases } = new OriginalAccount(args.host, args.port));
  accountModule.default = class PersistentAccount extends OriginalAccount {
    constructor(host, port) {
      super(host, port);
      databases._parent = this;
      this.databases = databases;
    }
  };

  // Every change to a database, collection, UDF or document goes through Items._set or Items.delete.
  let changes = 0;
  let saved = 0;
  let dirtyMarked = false;
  const markChanged = () => {
    changes += 1;
    if (!dirtyMarked) {
      dirtyMarked = true;
      try {
        fs.writeFileSync(`${file}.dirty`, `${new Date().toISOString()} pid ${process.pid}\n`);
      } catch (err) {
        warn(`could not write ${file}.dirty: ${err.message}`);
      }
    }
  };
  const originalSet = Items.prototype._set;
  const originalDelete = Items.prototype.delete;
  Items.prototype._set = function _set(...rest) {
    const result = originalSet.apply(this, rest);
    markChanged();
    return result;
  };
  Items.prototype.delete = function remove(...rest) {
    const result = originalDelete.apply(this, rest);
    markChanged();
    return result;
  };
  // A load that found FILE.dirty keeps it until this run shuts down cleanly.
  dirtyMarked = fs.existsSync(`${file}.dirty`);
  writeStatus(file, status);

  const save = reason => {
    const at = changes;
    saveSnapshot(file, databases, reason);
    saved = at;
  };
  const timer = setInterval(() => {
    if (changes === saved) return;
    try {
      save("periodic");
    } catch (err) {
      warn(`periodic snapshot to ${file} failed: ${err.message}`);
    }
  }, args.saveInterval * 1000);
  timer.unref();

  let stopping = false;
  const shutdown = signal => {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    let code = 0;
    try {
      if (changes !== saved || !fs.existsSync(file)) save(`shutdown on ${signal}`);
      else log(`nothing changed since ${file} was written (${signal})`);
      fs.rmSync(`${file}.dirty`, { force: true });
    } catch (err) {
      warn(`could not write the snapshot to ${file}: ${err.stack || err.message}`);
      code = 1;
    }
    process.exit(code);
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));

  listen(server, args);
}

main();
