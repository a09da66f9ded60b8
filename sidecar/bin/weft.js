#!/usr/bin/env node
// The `weft` command. The CLI is TypeScript, run through tsx's ESM loader.
import { register } from "tsx/esm/api";

register();
await import("../cli.ts");
