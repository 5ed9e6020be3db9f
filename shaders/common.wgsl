// Shared by every kernel (after the generated constants and the generated
// `Step` struct): the per-step values (group 1, dynamic offset); ops.wgsl
// follows. Each family's parameters `args` (group 0,
// binding 0) and storage bindings are generated from gpu::params.

@group(1) @binding(0) var<uniform> st: Step;
