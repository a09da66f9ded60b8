import { type DescFile, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ReflectionService } from "@grpc/reflection";
import { type LibraryMethod, type ServiceRegistry, addLibraryService } from "./library-service.js";

type PackageDefinition = ConstructorParameters<typeof ReflectionService>[0];

const REFLECTION_METHODS: readonly LibraryMethod[] = ["v1", "v1alpha"].map((version) => ({
  path: `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
  requestStream: true,
  responseStream: true,
}));

/**
 * Adds gRPC server reflection (`grpc.reflection.v1` and `v1alpha`, by @grpc/reflection,
 * loaded on the first call: addLibraryService) for `files` and every file they import. It
 * lists the services of all those files, and serves each file as generated into src/gen (so
 * as buf compiled proto/), under its own name.
 *
 * @grpc/reflection reads only the `fileDescriptorProtos` of each entry of the package
 * definition it is given, so that is all this one has. A definition from @grpc/proto-loader
 * would serve descriptors that protobufjs rebuilt, with every file of a package merged into
 * one named after the package ("weft_v1.proto"): file_by_filename("weft/v1/mesh.proto") and
 * the imports that tools follow would not resolve.
 */
export function addReflection(server: ServiceRegistry, files: readonly DescFile[]): void {
  addLibraryService(server, REFLECTION_METHODS, async () => {
    const { ReflectionService } = await import("@grpc/reflection");
    const reflection = new ReflectionService(packageOf(files));
    return (registry) => reflection.addToServer(registry);
  });
}

/** Every file, after the files it imports, as one entry's FileDescriptorProtos. */
function packageOf(files: readonly DescFile[]): PackageDefinition {
  const encoded = new Map<string, Buffer>();
  const add = (file: DescFile): void => {
    if (encoded.has(file.name)) return;
    for (const dependency of file.dependencies) add(dependency);
    const bytes = toBinary(FileDescriptorProtoSchema, file.proto);
    encoded.set(file.name, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  };
  for (const file of files) add(file);
  return { weft: { fileDescriptorProtos: [...encoded.values()] } } as unknown as PackageDefinition;
}
