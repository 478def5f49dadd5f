#!/usr/bin/env node
// Checks Grafana dashboard JSON files against Grafana's own dashboard model:
// the Dashboard type of @grafana/schema (the TypeScript Grafana generates
// from its dashboard schema), with the TypeScript compiler. The JSON becomes
// an object literal typed as Dashboard, so a wrong type, a value outside an
// enum, a missing required field or an unknown field name (TypeScript's
// excess-property check) is an error, reported with its JSON line.
//
//   NODE_PATH=build/k8s-tools/node_modules node e2e/k8s/grafana-dashboard.js FILE...
//
// Exit 0 when every file conforms; 1 with the errors on stdout otherwise.
// Test tooling only (scripts/k8s-tools.sh installs typescript and
// @grafana/schema, pinned by package-lock.json).
"use strict";

const fs = require("fs");
const path = require("path");
const ts = require("typescript");

// Where @grafana/schema's type declarations are (its package exports do not
// include package.json, so look along the module paths).
function schemaTypes() {
    const dirs = (process.env.NODE_PATH || "").split(path.delimiter).concat(module.paths);
    for (const d of dirs) {
        const p = path.join(d, "@grafana", "schema", "dist", "types", "index.d.ts");
        if (d && fs.existsSync(p)) return path.resolve(p); // imported by absolute path
    }
    throw new Error("@grafana/schema not found (NODE_PATH: run scripts/k8s-tools.sh)");
}

function check(file, types) {
    const text = fs.readFileSync(file, "utf8");
    JSON.parse(text); // plain JSON first: a syntax error is reported as such
    const head = 'import type { Dashboard } from ' + JSON.stringify(types.replace(/\.d\.ts$/, "")) +
        ";\nexport const dashboard: Dashboard = ";
    const src = head + text.trimEnd() + ";\n";
    const name = path.resolve(file) + ".check.ts";
    const options = {
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        target: ts.ScriptTarget.ES2020,
        module: ts.ModuleKind.CommonJS,
        moduleResolution: ts.ModuleResolutionKind.Node10,
        types: [],
    };
    const host = ts.createCompilerHost(options);
    const getSourceFile = host.getSourceFile;
    host.getSourceFile = (f, lang, onError) =>
        f === name ? ts.createSourceFile(f, src, lang) : getSourceFile.call(host, f, lang, onError);
    const fileExists = host.fileExists;
    host.fileExists = (f) => f === name || fileExists.call(host, f);
    const program = ts.createProgram([name], options, host);
    const lines = [];
    for (const d of ts.getPreEmitDiagnostics(program)) {
        const msg = ts.flattenDiagnosticMessageText(d.messageText, "\n  ");
        if (d.file && d.file.fileName === name) {
            const { line } = d.file.getLineAndCharacterOfPosition(d.start);
            lines.push(file + ":" + line + ": " + msg); // line 1 of src is the import
        } else {
            lines.push((d.file ? d.file.fileName : file) + ": " + msg);
        }
    }
    return lines;
}

const files = process.argv.slice(2);
if (files.length === 0) {
    console.error("usage: grafana-dashboard.js FILE...");
    process.exit(2);
}
const types = schemaTypes();
let bad = 0;
for (const f of files) {
    const errs = check(f, types);
    if (errs.length) {
        bad++;
        console.log(errs.join("\n"));
    } else {
        console.log(f + ": a valid Grafana dashboard (@grafana/schema " +
            JSON.parse(fs.readFileSync(path.join(path.dirname(types), "..", "..", "package.json"))).version + ")");
    }
}
process.exit(bad ? 1 : 0);
