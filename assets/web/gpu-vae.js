// gpu-vae.js: runs a model written by `gpu-vae export --format web` on WebGPU.
//
// An ES module with no dependencies and no build step. It knows no model:
// model.json holds the inference programs that the Rust GPU engine's own
// lowering and fusion passes made (planned for WebGPU's default limits),
// written out as data: each kernel's WGSL, the buffers, and each dispatch's
// bindings, uniform parameters and workgroup counts. This file creates the
// pipelines, binds the buffers, records the dispatches into one compute
// pass, and reads the output back.
//
//   import { loadModel } from './gpu-vae.js';
//   const model = await loadModel('./');        // the folder of model.json
//   const pixels = await model.decode(z, n);    // n x C x H x W in [0, 1]
//   const means = await model.encode(x, n);     // n x latent

const NO_WEBGPU =
  'This browser has no WebGPU: use a recent Chrome or Edge (or Firefox Nightly / Safari Technology Preview ' +
  'with WebGPU enabled), or start Chromium with --enable-unsafe-webgpu.';

/** Loads model.json and weights.bin from `baseUrl` and opens a WebGPU device. */
export async function loadModel(baseUrl = './') {
  if (!globalThis.navigator || !navigator.gpu) throw new Error(NO_WEBGPU);
  const base = new URL(baseUrl, globalThis.document ? document.baseURI : globalThis.location.href);
  const spec = await (await fetchOk(new URL('model.json', base))).json();
  if (spec.format !== 'gpu-vae web' || spec.version !== 1) {
    throw new Error(`model.json: not a gpu-vae web export of version 1 (${spec.format} ${spec.version})`);
  }
  const weights = await (await fetchOk(new URL(spec.weights.file, base))).arrayBuffer();
  if (weights.byteLength !== spec.weights.floats * 4) {
    throw new Error(`${spec.weights.file}: ${weights.byteLength} bytes for ${spec.weights.floats} floats`);
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error('WebGPU is there but found no adapter (GPU blocked or disabled). ' + NO_WEBGPU);
  // The default limits: the programs were planned for them.
  const device = await adapter.requestDevice();
  return new Model(device, spec, weights, adapter.info || {});
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

class Model {
  constructor(device, spec, weights, adapterInfo) {
    this.device = device;
    this.spec = spec;
    this.adapter = adapterInfo;
    this.kind = spec.kind;
    this.latent = spec.latent;
    this.channels = spec.channels;
    this.height = spec.height;
    this.width = spec.width;
    this.classes = spec.classes;
    this.weights = this.#buffer(weights.byteLength, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    device.queue.writeBuffer(this.weights, 0, weights);
    this.stepBuffer = this.#buffer(Math.max(256, spec.step.bytes), GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    this.stepLayout = device.createBindGroupLayout({
      entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } }],
    });
    this.stepGroup = device.createBindGroup({
      layout: this.stepLayout,
      entries: [{ binding: 0, resource: { buffer: this.stepBuffer, size: spec.step.bytes } }],
    });
    this.modules = new Map();
    this.layouts = new Map();
    this.pipelines = new Map();
    this.programs = new Map();
    // One call at a time: the programs share their buffers and the step row.
    this.queue = Promise.resolve();
  }

  /** Pixels in [0, 1] (n x C x H x W) of the codes z (n x latent); labels: n class indices for a conditional model. */
  decode(z, n, labels) {
    return this.#call('decoder', z, n, labels);
  }

  /** Latent means (n x latent) of images x in [0, 1] (n x C x H x W). */
  encode(x, n, labels) {
    return this.#call('encoder', x, n, labels);
  }

  #call(half, data, n, labels) {
    const run = () => this.#run(half, data, n, labels);
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => {});
    return result;
  }

  async #run(half, data, n, labels) {
    const list = this.spec.programs[half];
    const widthIn = list[0].input.width;
    if (!Number.isInteger(n) || n < 1) throw new Error(`${half}: ${n} rows`);
    if (data.length !== n * widthIn) throw new Error(`${half}: ${data.length} values are not ${n} rows of ${widthIn}`);
    const classes = this.classes.length;
    if (classes > 0) {
      if (!labels || labels.length !== n) throw new Error(`a conditional model needs ${n} labels (0..${classes - 1})`);
      for (const l of labels) if (!(l >= 0 && l < classes)) throw new Error(`label ${l} is not in 0..${classes - 1}`);
    } else if (labels) {
      throw new Error('labels given to a model that is not conditional');
    }
    const largest = list[list.length - 1].rows;
    const take = list[0].output.take;
    const out = new Float32Array(n * take);
    for (let at = 0; at < n; at += largest) {
      const rows = Math.min(largest, n - at);
      const spec = list.find((p) => p.rows >= rows);
      const program = await this.#program(half, spec);
      const x = Float32Array.from(data.subarray ? data.subarray(at * widthIn, (at + rows) * widthIn)
        : data.slice(at * widthIn, (at + rows) * widthIn));
      const chunk = await this.#runChunk(program, x, rows, labels && labels.slice(at, at + rows));
      out.set(chunk, at * take);
    }
    return out;
  }

  async #runChunk(p, x, rows, labels) {
    const { device, spec } = this;
    device.pushErrorScope('validation');
    device.queue.writeBuffer(p.buffers[p.spec.input.buffer], 0, x);
    if (p.spec.labels) {
      const width = p.spec.labels.width;
      const onehot = new Float32Array(rows * width);
      labels.forEach((l, i) => (onehot[i * width + l] = 1));
      device.queue.writeBuffer(p.buffers[p.spec.labels.buffer], 0, onehot);
    }
    const step = new Uint32Array(spec.step.bytes / 4);
    step[spec.step.rows_word] = rows;
    device.queue.writeBuffer(this.stepBuffer, 0, step);
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setBindGroup(1, this.stepGroup);
    for (const d of p.dispatches) {
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.group);
      pass.dispatchWorkgroups(...d.groups);
    }
    pass.end();
    const width = p.spec.output.width;
    const bytes = rows * width * 4;
    encoder.copyBufferToBuffer(p.buffers[p.spec.output.buffer], 0, p.staging, 0, bytes);
    device.queue.submit([encoder.finish()]);
    const error = await device.popErrorScope();
    if (error) throw new Error(`WebGPU: ${error.message}`);
    await p.staging.mapAsync(GPUMapMode.READ, 0, bytes);
    const all = new Float32Array(p.staging.getMappedRange(0, bytes).slice(0));
    p.staging.unmap();
    const take = p.spec.output.take;
    if (take === width) return all;
    const out = new Float32Array(rows * take);
    for (let r = 0; r < rows; r++) out.set(all.subarray(r * width, r * width + take), r * take);
    return out;
  }

  /** A program's buffers, pipelines and bind groups, built on first use. */
  async #program(half, spec) {
    const key = `${half} ${spec.rows}`;
    if (this.programs.has(key)) return this.programs.get(key);
    const { device } = this;
    device.pushErrorScope('validation');
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const buffers = spec.buffers.map((b) => (b.role === 'weights' ? this.weights : this.#buffer(b.bytes, usage)));
    const dispatches = [];
    for (const d of spec.dispatches) {
      const layoutEntries = d.bindings.map((b) => ({
        binding: b.binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: b.uniform ? 'uniform' : b.access === 'read' ? 'read-only-storage' : 'storage' },
      }));
      const layout = this.#layout(layoutEntries);
      const entries = d.bindings.map((b) => {
        if (!b.uniform) return { binding: b.binding, resource: { buffer: buffers[b.buffer] } };
        const words = new Uint32Array(Math.max(16, Math.ceil(b.uniform.length / 4) * 4));
        words.set(b.uniform);
        const uniform = this.#buffer(words.byteLength, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
        device.queue.writeBuffer(uniform, 0, words);
        return { binding: b.binding, resource: { buffer: uniform } };
      });
      const pipeline = await this.#pipeline(d.module, d.entry, layout, layoutEntries);
      const group = device.createBindGroup({ layout, entries });
      dispatches.push({ pipeline, group, groups: d.groups, label: d.label });
    }
    const staging = this.#buffer(spec.rows * spec.output.width * 4, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    const error = await device.popErrorScope();
    if (error) throw new Error(`WebGPU, building the ${half} program: ${error.message}`);
    const program = { spec, buffers, dispatches, staging };
    this.programs.set(key, program);
    return program;
  }

  #buffer(size, usage) {
    return this.device.createBuffer({ size: Math.max(16, Math.ceil(size / 4) * 4), usage });
  }

  #layout(entries) {
    const key = JSON.stringify(entries);
    if (!this.layouts.has(key)) this.layouts.set(key, this.device.createBindGroupLayout({ entries }));
    return this.layouts.get(key);
  }

  async #pipeline(moduleId, entryPoint, layout, layoutEntries) {
    const key = `${moduleId} ${entryPoint} ${JSON.stringify(layoutEntries)}`;
    if (this.pipelines.has(key)) return this.pipelines.get(key);
    let module = this.modules.get(moduleId);
    if (!module) {
      module = this.device.createShaderModule({ code: this.spec.modules[moduleId] });
      const info = await module.getCompilationInfo();
      const errors = info.messages.filter((m) => m.type === 'error');
      if (errors.length) {
        const first = errors[0];
        throw new Error(`WGSL module ${moduleId}, line ${first.lineNum}: ${first.message}`);
      }
      this.modules.set(moduleId, module);
    }
    const pipeline = await this.device.createComputePipelineAsync({
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout, this.stepLayout] }),
      compute: { module, entryPoint },
    });
    this.pipelines.set(key, pipeline);
    return pipeline;
  }
}
