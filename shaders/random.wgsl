// Test entry points for the RNG twin (shaders/rng.wgsl): raw pcg4d words and
// normals for counters (seed, stream, step, i) with i < count (RandomParams).

@compute @workgroup_size(WG)
fn pcg4d_words(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < args.count; i += nwg.x * WG) {
        let h = pcg4d(vec4<u32>(args.seed, args.stream, args.step, i));
        words[4u * i] = h.x;
        words[4u * i + 1u] = h.y;
        words[4u * i + 2u] = h.z;
        words[4u * i + 3u] = h.w;
    }
}

// unit_uniform of the first word, as rng::uniform; the f32 bits are stored as u32.
@compute @workgroup_size(WG)
fn fill_uniform(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < args.count; i += nwg.x * WG) {
        words[i] = bitcast<u32>(unit_uniform(pcg4d(vec4<u32>(args.seed, args.stream, args.step, i)).x));
    }
}

// Twin of rng::fill_normal; the f32 bits are stored as u32.
@compute @workgroup_size(WG)
fn fill_normal(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < args.count; i += nwg.x * WG) {
        words[i] = bitcast<u32>(normal(args.seed, args.stream, args.step, i));
    }
}
