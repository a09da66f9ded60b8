import { createRequire } from "node:module";

/**
 * glibc's `malloc_trim(0)`, through koffi (a C FFI with prebuilt binaries), or undefined
 * where it cannot be had: no glibc (musl, macOS), or no koffi binary for the platform.
 *
 * After a burst, most of what glibc's malloc keeps is free but lies below memory still in
 * use, and free() returns only the top of the heap. malloc_trim hands those free pages back
 * to the system; it holds the loop longer the more there is to give back, so it runs once a
 * burst (see BurstCollector), not per free.
 */
export function loadMallocTrim(): (() => void) | undefined {
  if (process.platform !== "linux") return undefined;
  try {
    const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
    const trim = koffi.load("libc.so.6").func("int malloc_trim(size_t pad)") as (pad: number) => number;
    return () => void trim(0);
  } catch {
    return undefined;
  }
}
