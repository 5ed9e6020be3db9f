// Batch assembly on the device, twins of src/data/loader.rs. The data set is
// uploaded once as u8, four pixels per u32 (little end first); the step's rows
// are images order[row_offset ..][.. rows].
// Parameters: GatherParams (n = D pixels per image; off_in into clean,
// off_out into out; classes: a conditional model's label count, else 0).

// out (rows, D) = pixels / 255; onehot (rows, classes) = the rows' labels
// (u8, packed as the pixels are) one-hot, twin of loader::one_hot. One
// dispatch writes both: a conditional step costs no extra dispatch here.
@compute @workgroup_size(WG)
fn gather_batch(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let dim = args.n;
    let len = st.rows * dim;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let image = order[st.row_offset + i / dim];
        let byte = image * dim + i % dim;
        let px = (pixels[byte >> 2u] >> ((byte & 3u) * 8u)) & 255u;
        out[args.off_out + i] = f32(px) / 255.0;
    }
    let marks = st.rows * args.classes;
    for (var i = gid.x; i < marks; i += nwg.x * WG) {
        let image = order[st.row_offset + i / args.classes];
        let label = (labels[image >> 2u] >> ((image & 3u) * 8u)) & 255u;
        onehot[i] = select(0.0, 1.0, label == i % args.classes);
    }
}

// out = clamp(clean + noise_std · N(seed, noise_stream, rng_step, i), 0, 1).
@compute @workgroup_size(WG)
fn add_input_noise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let len = st.rows * args.n;
    for (var i = gid.x; i < len; i += nwg.x * WG) {
        let z = normal(st.seed, st.noise_stream, st.rng_step, i);
        out[args.off_out + i] = input_noise(clean[args.off_in + i], st.noise_std, z);
    }
}
