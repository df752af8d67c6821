//! GpuKernel: one wgpu device per process, its pipelines, resident feature buffers, and
//! the passes that run the shaders and add their workgroups' partials.

#[allow(unused_imports)]
use super::*;

/// Pipelines of the three kernels, built once; `None` for a kernel the adapter cannot run
/// (its passes run on the CPU).
struct Pipelines {
    gradient: Option<wgpu::ComputePipeline>,
    multinomial: Option<wgpu::ComputePipeline>,
    kmeans: Option<wgpu::ComputePipeline>,
}

/// One kind of pass: its pipeline, the uniform's third word, the floats each workgroup
/// writes, the rows a workgroup takes, and whether labels are bound.
#[derive(Clone, Copy)]
struct Pass<'a> {
    pipeline: &'a wgpu::ComputePipeline,
    extra: u32,
    stride: usize,
    group_rows: usize,
    with_labels: bool,
}

/// Features (and labels) of one chunk of a block, on the device.
struct ResidentChunk {
    rows: usize,
    features: wgpu::Buffer,
    labels: Option<wgpu::Buffer>,
}

/// A block's chunks on the device, and the Arrow buffer they came from.
struct Resident {
    owner: Option<arrow::buffer::Buffer>,
    chunks: Vec<Arc<ResidentChunk>>,
    bytes: u64,
    last_used: u64,
}

/// The GPU kernel of one process (see the module documentation).
pub struct GpuKernel {
    adapter: String,
    limits_text: String,
    unavailable: Vec<String>,
    backend: Option<GpuBackend>,
    software: bool,
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipelines: Pipelines,
    limits: wgpu::Limits,
    resident: Mutex<HashMap<(usize, usize, usize), Resident>>,
    budget: u64,
    clock: AtomicU64,
    failed: Arc<AtomicBool>,
    warned: AtomicBool,
}

impl fmt::Debug for GpuKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuKernel")
            .field("adapter", &self.adapter)
            .finish_non_exhaustive()
    }
}

pub(super) fn gpu_error(message: impl Into<String>) -> MlError {
    MlError::Session(message.into().into())
}

impl GpuKernel {
    /// Opens the best-ranked adapter on any compiled-in backend (see [`AdapterChoice`]).
    ///
    /// # Errors
    ///
    /// No adapter, or none whose device and kernels could be created.
    pub fn new() -> Result<Self> {
        Self::open(&AdapterChoice::default())
    }

    /// Opens the best-ranked adapter `choice` allows and builds the kernels; an adapter
    /// whose device cannot be opened, or that can build none of the kernels, is passed
    /// over for the next one.
    ///
    /// # Errors
    ///
    /// No adapter fits `choice`, or none of those that do could be opened.
    pub fn open(choice: &AdapterChoice) -> Result<Self> {
        let (candidates, found) = adapter::candidates(choice);
        if candidates.is_empty() {
            return Err(gpu_error(adapter::none_found(choice, &found)));
        }
        let mut errors = Vec::new();
        for candidate in candidates {
            let name = candidate.get_info().name;
            match Self::open_adapter(candidate, choice) {
                Ok(kernel) => return Ok(kernel),
                Err(e) => {
                    tracing::warn!(adapter = %name, error = %e, "GPU adapter passed over");
                    errors.push(format!("{name}: {e}"));
                }
            }
        }
        Err(gpu_error(format!(
            "no GPU adapter could be opened: {}",
            errors.join("; ")
        )))
    }

    fn open_adapter(
        adapter: wgpu::Adapter,
        choice: &AdapterChoice,
    ) -> std::result::Result<Self, String> {
        let info = adapter.get_info();
        let mut limits = adapter.limits();
        if let Some(cap) = choice.max_binding_bytes {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap);
            limits.max_buffer_size = limits.max_buffer_size.min(cap);
        }
        if let Some(cap) = choice.max_workgroup_invocations {
            limits.max_compute_invocations_per_workgroup =
                limits.max_compute_invocations_per_workgroup.min(cap);
            limits.max_compute_workgroup_size_x = limits.max_compute_workgroup_size_x.min(cap);
        }
        let (device, queue) =
            futures::executor::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("ember-mllib"),
                required_limits: limits.clone(),
                ..Default::default()
            }))
            .map_err(|e| format!("cannot open the device: {e}"))?;
        let failed = Arc::new(AtomicBool::new(false));
        let on_error = Arc::clone(&failed);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            tracing::warn!(error = %e, "GPU error; mllib falls back to the CPU kernel");
            on_error.store(true, Ordering::SeqCst);
        }));
        let on_lost = Arc::clone(&failed);
        device.set_device_lost_callback(move |reason, message| {
            tracing::warn!(?reason, %message, "GPU device lost; mllib falls back to the CPU kernel");
            on_lost.store(true, Ordering::SeqCst);
        });
        let backend = info.backend;
        let mut unavailable = Vec::new();
        let mut pipeline = |name: &'static str, source: String| {
            // Errors of building one kernel (a backend that cannot translate it, a
            // workgroup larger than the device allows) are caught here, so the other
            // kernels still run on the device.
            let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
            let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                });
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(name),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
            }));
            let errors = [
                futures::executor::block_on(validation.pop()),
                futures::executor::block_on(internal.pop()),
            ];
            let error = match built {
                Err(_) => Some("the GPU runtime panicked".to_string()),
                Ok(_) => errors.into_iter().flatten().next().map(|e| e.to_string()),
            };
            match (built, error) {
                (Ok(p), None) => Some(p),
                (_, error) => {
                    let error = error.unwrap_or_default();
                    tracing::warn!(
                        adapter = %info.name, %backend, kernel = name, %error,
                        "the {backend} backend cannot run this mllib kernel on this adapter; \
                         its passes run on the CPU"
                    );
                    unavailable.push(format!("{name}: {}", first_line(&error)));
                    None
                }
            }
        };
        let [(g, gs), (m, ms), (k, ks)] = shader_sources();
        let pipelines = Pipelines {
            gradient: pipeline(g, gs),
            multinomial: pipeline(m, ms),
            kmeans: pipeline(k, ks),
        };
        if pipelines.gradient.is_none()
            && pipelines.multinomial.is_none()
            && pipelines.kmeans.is_none()
        {
            return Err(format!(
                "no kernel could be built ({})",
                unavailable.join("; ")
            ));
        }
        let budget = std::env::var(RESIDENT_BUDGET_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2u64 << 30);
        Ok(Self {
            adapter: format!("{} ({}, {:?})", info.name, backend, info.device_type),
            limits_text: format!(
                "max storage binding {}, max buffer {}, {} invocations and {} of memory per \
                 workgroup",
                bytes_text(limits.max_storage_buffer_binding_size),
                bytes_text(limits.max_buffer_size),
                limits.max_compute_invocations_per_workgroup,
                bytes_text(u64::from(limits.max_compute_workgroup_storage_size)),
            ),
            unavailable,
            backend: GpuBackend::of(backend),
            software: info.device_type == wgpu::DeviceType::Cpu,
            device,
            queue,
            pipelines,
            limits,
            resident: Mutex::new(HashMap::new()),
            budget,
            clock: AtomicU64::new(0),
            failed,
            warned: AtomicBool::new(false),
        })
    }

    /// The adapter's name, backend and type.
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// The adapter's backend.
    pub fn backend(&self) -> Option<GpuBackend> {
        self.backend
    }

    /// The device limits the kernels work within, in words.
    pub fn limits(&self) -> &str {
        &self.limits_text
    }

    /// The kernels this adapter cannot run, each with why (their passes run on the CPU).
    pub fn unavailable(&self) -> &[String] {
        &self.unavailable
    }

    /// The adapter, its backend and type, its limits and any kernel it cannot run: what
    /// executor status and job metrics report.
    pub fn describe(&self) -> String {
        let mut text = format!("{}; {}", self.adapter, self.limits_text);
        if !self.unavailable.is_empty() {
            text.push_str(&format!("; on the CPU: {}", self.unavailable.join(", ")));
        }
        text
    }

    /// Whether the adapter is a software implementation on the CPU (such as Mesa's
    /// lavapipe): right for testing the shaders, slower than the CPU kernel.
    pub fn is_software(&self) -> bool {
        self.software
    }

    /// Bytes of features and labels resident on the device.
    pub fn resident_bytes(&self) -> u64 {
        self.resident
            .lock()
            .map(|r| r.values().map(|e| e.bytes).sum())
            .unwrap_or(0)
    }

    /// Bytes per second the device copies between two of its buffers of `bytes` in all
    /// (cut into bindings the limits allow), timed by the host around `reps` submissions
    /// after a warm-up; the median. A bench divides a kernel's bytes read per second by it.
    ///
    /// # Errors
    ///
    /// The copy kernel cannot be built, or the device fails.
    pub fn copy_bandwidth(&self, bytes: u64, reps: usize) -> Result<f64> {
        let error = |e: String| gpu_error(format!("copy bandwidth on {}: {e}", self.adapter));
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("copy"),
                source: wgpu::ShaderSource::Wgsl(COPY_SHADER.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("copy"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = futures::executor::block_on(scope.pop()) {
            return Err(error(e.to_string()));
        }
        let max_binding = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
            / 16
            * 16;
        // Every float a distinct value, so no layer can shortcut a buffer of zeros.
        let pattern: Vec<f32> = (0..(max_binding.min(bytes.max(16)) / 4) as usize)
            .map(|i| i as f32)
            .collect();
        let mut pairs = Vec::new();
        let mut left = bytes.max(16) / 16 * 16;
        while left > 0 {
            let size = left.min(max_binding);
            let buffer = |label: &str, usage: wgpu::BufferUsages| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage: wgpu::BufferUsages::STORAGE | usage,
                    mapped_at_creation: false,
                })
            };
            let src = buffer("copy source", wgpu::BufferUsages::COPY_DST);
            let dst = buffer("copy destination", wgpu::BufferUsages::empty());
            self.queue
                .write_buffer(&src, 0, f32_bytes(&pattern[..(size / 4) as usize]));
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("copy bindings"),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: src.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: dst.as_entire_binding(),
                    },
                ],
            });
            pairs.push((size, bind, src, dst));
            left -= size;
        }
        let run = || -> std::result::Result<f64, String> {
            let started = std::time::Instant::now();
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("copy"),
                });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("copy"),
                    timestamp_writes: None,
                });
                pass.set_pipeline(&pipeline);
                for (size, bind, _, _) in &pairs {
                    let groups = (*size as usize / 16).div_ceil(COPY_ROWS);
                    let (gx, gy) = (groups.min(65_535), groups.div_ceil(65_535));
                    pass.set_bind_group(0, bind, &[]);
                    pass.dispatch_workgroups(gx as u32, gy as u32, 1);
                }
            }
            self.queue.submit([encoder.finish()]);
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| format!("waiting for the GPU: {e}"))?;
            Ok(started.elapsed().as_secs_f64())
        };
        run().map_err(error)?;
        let mut times = (0..reps.max(1))
            .map(|_| run())
            .collect::<std::result::Result<Vec<f64>, String>>()
            .map_err(error)?;
        times.sort_by(f64::total_cmp);
        if self.failed.load(Ordering::SeqCst) {
            return Err(error("the device reported an error".into()));
        }
        Ok(bytes as f64 / times[times.len() / 2])
    }

    /// Rows per chunk for `dim` features, so that the features, the labels and the
    /// partials of `stride` floats per `group_rows` rows fit the adapter's buffer limits.
    fn chunk_rows(&self, dim: usize, stride: usize, group_rows: usize) -> usize {
        let max_binding = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size) as usize;
        let by_features = max_binding / (dim.max(1) * 4);
        let by_partials = max_binding / (stride * 4) * group_rows;
        let by_dispatch = 65_535usize * 65_535 / group_rows.max(1) * group_rows;
        by_features
            .min(by_partials)
            .min(by_dispatch)
            .max(group_rows)
            / group_rows
            * group_rows
    }

    /// A buffer holding `bytes` (created unmapped and written through the queue, so a lost
    /// device reports an error instead of panicking).
    fn upload(&self, label: &str, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let size = (bytes.len() as u64).max(4);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if !bytes.is_empty() {
            self.queue.write_buffer(&buffer, 0, bytes);
        }
        buffer
    }

    /// Runs a pass, turning a panic inside wgpu (seen on a destroyed device) into an error.
    fn run_guarded(
        &self,
        pass: &Pass<'_>,
        blocks: &[DenseBlock<'_>],
        data: &[f32],
    ) -> std::result::Result<Vec<f64>, String> {
        if self.failed.load(Ordering::SeqCst) {
            return Err("the device failed earlier".into());
        }
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run(pass, blocks, data)
        }))
        .unwrap_or_else(|_| Err("the GPU runtime panicked".into()))
    }

    /// Destroys the device, as a driver reset or an unplugged GPU would: later passes run
    /// on the CPU (to exercise the fallback).
    pub fn destroy_device(&self) {
        self.device.destroy();
    }

    /// Whether passes still run on the device (false once it failed or was lost).
    pub fn is_usable(&self) -> bool {
        !self.failed.load(Ordering::SeqCst)
    }

    /// The resident chunks of `block` (uploaded now if they are not).
    fn resident_chunks(
        &self,
        block: &DenseBlock<'_>,
        chunk_rows: usize,
    ) -> Vec<Arc<ResidentChunk>> {
        let key = (
            block.features.as_ptr() as usize,
            block.features.len(),
            chunk_rows,
        );
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut resident = self.resident.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = resident.get_mut(&key) {
            entry.last_used = tick;
            return entry.chunks.clone();
        }
        let d = block.dimension;
        let mut chunks = Vec::new();
        let mut bytes = 0u64;
        let mut start = 0;
        while start < block.rows {
            let end = (start + chunk_rows).min(block.rows);
            let features = self.upload(
                "features",
                f32_bytes(&block.features[start * d..end * d]),
                wgpu::BufferUsages::STORAGE,
            );
            bytes += ((end - start) * d * 4) as u64;
            let labels = (!block.labels.is_empty()).then(|| {
                let values: Vec<f32> = block.labels[start..end].iter().map(|v| *v as f32).collect();
                bytes += ((end - start) * 4) as u64;
                self.upload("labels", f32_bytes(&values), wgpu::BufferUsages::STORAGE)
            });
            chunks.push(Arc::new(ResidentChunk {
                rows: end - start,
                features,
                labels,
            }));
            start = end;
        }
        // Release blocks the executor no longer holds, then the least recently used.
        resident.retain(|_, e| e.owner.as_ref().is_none_or(|b| b.strong_count() > 1));
        let mut total: u64 = resident.values().map(|e| e.bytes).sum::<u64>() + bytes;
        while total > self.budget && !resident.is_empty() {
            let Some(oldest) = resident
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(e) = resident.remove(&oldest) {
                total -= e.bytes;
            }
        }
        if block.owner.is_some() {
            resident.insert(
                key,
                Resident {
                    owner: block.owner.cloned(),
                    chunks: chunks.clone(),
                    bytes,
                    last_used: tick,
                },
            );
        }
        chunks
    }

    /// Runs `pipeline` over every chunk of `blocks` (bindings: params, features, [labels],
    /// `data`, partials) and returns the sum, in f64, of every workgroup's `stride` partials.
    fn run(
        &self,
        pass: &Pass<'_>,
        blocks: &[DenseBlock<'_>],
        data: &[f32],
    ) -> std::result::Result<Vec<f64>, String> {
        let Pass {
            pipeline,
            extra,
            stride,
            group_rows,
            with_labels,
        } = *pass;
        let d = blocks.first().map(|b| b.dimension).unwrap_or(0);
        let chunk_rows = self.chunk_rows(d, stride, group_rows);
        let data_buffer = self.upload(
            "weights",
            f32_bytes(if data.is_empty() { &[0.0] } else { data }),
            wgpu::BufferUsages::STORAGE,
        );
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("mllib pass"),
            });
        let mut readbacks = Vec::new();
        for block in blocks.iter().filter(|b| b.rows > 0) {
            for chunk in self.resident_chunks(block, chunk_rows) {
                let groups = chunk.rows.div_ceil(group_rows);
                let (gx, gy) = (groups.min(65_535), groups.div_ceil(65_535));
                let out_len = (gx * gy * stride * 4) as u64;
                let params = [chunk.rows as u32, d as u32, extra, 0u32];
                let params = self.upload("params", u32_bytes(&params), wgpu::BufferUsages::UNIFORM);
                let partials = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("partials"),
                    size: out_len,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: out_len,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut entries = vec![
                    params.as_entire_binding(),
                    chunk.features.as_entire_binding(),
                ];
                if with_labels {
                    let labels = chunk
                        .labels
                        .as_ref()
                        .ok_or_else(|| "labels were not uploaded".to_string())?;
                    entries.push(labels.as_entire_binding());
                }
                entries.push(data_buffer.as_entire_binding());
                entries.push(partials.as_entire_binding());
                let entries: Vec<wgpu::BindGroupEntry<'_>> = entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, resource)| wgpu::BindGroupEntry {
                        binding: i as u32,
                        resource,
                    })
                    .collect();
                let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("mllib bindings"),
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                });
                {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("mllib kernel"),
                        timestamp_writes: None,
                    });
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, &bind, &[]);
                    pass.dispatch_workgroups(gx as u32, gy as u32, 1);
                }
                encoder.copy_buffer_to_buffer(&partials, 0, &readback, 0, out_len);
                readbacks.push(readback);
            }
        }
        self.queue.submit([encoder.finish()]);
        let mut total = vec![0.0f64; stride];
        for readback in &readbacks {
            let slice = readback.slice(..);
            let (tx, rx) = std::sync::mpsc::channel();
            slice.map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| format!("waiting for the GPU: {e}"))?;
            rx.recv()
                .map_err(|e| format!("reading back partials: {e}"))?
                .map_err(|e| format!("reading back partials: {e}"))?;
            {
                let view = slice
                    .get_mapped_range()
                    .map_err(|e| format!("reading back partials: {e}"))?;
                let values: &[f32] = bytes_f32(&view);
                for group in values.chunks_exact(stride) {
                    for (t, v) in total.iter_mut().zip(group) {
                        *t += f64::from(*v);
                    }
                }
            }
            readback.unmap();
        }
        if self.failed.load(Ordering::SeqCst) {
            return Err("the device reported an error".into());
        }
        Ok(total)
    }

    /// Whether the GPU can still be used; warns once when it cannot.
    fn usable(&self) -> bool {
        if self.failed.load(Ordering::SeqCst) {
            if !self.warned.swap(true, Ordering::SeqCst) {
                tracing::warn!(adapter = %self.adapter, "GPU unusable; mllib kernels run on the CPU");
            }
            false
        } else {
            true
        }
    }

    fn fall_back(&self, error: &str) {
        tracing::warn!(adapter = %self.adapter, %error, "GPU pass failed; running it on the CPU");
        self.failed.store(true, Ordering::SeqCst);
        self.warned.store(true, Ordering::SeqCst);
    }
}

/// A byte count in binary units (`128 MiB`).
fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
}

fn f32_bytes(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

fn u32_bytes(values: &[u32]) -> &[u8] {
    // SAFETY: u32 has no padding and any byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

fn bytes_f32(bytes: &[u8]) -> &[f32] {
    let (head, values, _) = unsafe {
        // SAFETY: every bit pattern is a valid f32; align_to only reinterprets the aligned
        // middle part.
        bytes.align_to::<f32>()
    };
    debug_assert!(head.is_empty(), "mapped GPU memory is aligned");
    values
}

impl Kernel for GpuKernel {
    fn device(&self) -> String {
        format!("gpu: {}", self.describe())
    }

    fn gradient(&self, loss: Loss, blocks: &[DenseBlock<'_>], params: &[f64], out: &mut [f64]) {
        let Some(d) = blocks.first().map(|b| b.dimension) else {
            return;
        };
        let (pipeline, pass) = match loss {
            Loss::Logistic | Loss::Squared => (
                self.pipelines.gradient.as_ref(),
                (u32::from(loss == Loss::Squared), d + 3, GRADIENT_ROWS),
            ),
            Loss::Multinomial { classes } => (
                self.pipelines
                    .multinomial
                    .as_ref()
                    .filter(|_| classes <= MAX_GPU_CLASSES),
                (classes as u32, classes * (d + 1) + 2, MULTINOMIAL_ROWS),
            ),
        };
        let Some(pipeline) = pipeline.filter(|_| self.usable()) else {
            return CpuKernel.gradient(loss, blocks, params, out);
        };
        let (extra, stride, group_rows) = pass;
        let weights: Vec<f32> = params.iter().map(|v| *v as f32).collect();
        let pass = Pass {
            pipeline,
            extra,
            stride,
            group_rows,
            with_labels: true,
        };
        match self.run_guarded(&pass, blocks, &weights) {
            // Same layout as the CPU kernel: [gradient..., loss, rows].
            Ok(total) => {
                for (o, t) in out.iter_mut().zip(&total) {
                    *o += t;
                }
            }
            Err(e) => {
                self.fall_back(&e);
                CpuKernel.gradient(loss, blocks, params, out);
            }
        }
    }

    fn kmeans(&self, blocks: &[DenseBlock<'_>], centres: &[f64], k: usize, out: &mut [f64]) {
        let Some(d) = blocks.first().map(|b| b.dimension) else {
            return;
        };
        let Some(pipeline) = self.pipelines.kmeans.as_ref().filter(|_| self.usable()) else {
            return CpuKernel.kmeans(blocks, centres, k, out);
        };
        let centres32: Vec<f32> = centres.iter().map(|v| *v as f32).collect();
        let pass = Pass {
            pipeline,
            extra: k as u32,
            stride: k * (d + 1) + 1,
            group_rows: KMEANS_ROWS,
            with_labels: false,
        };
        match self.run_guarded(&pass, blocks, &centres32) {
            Ok(total) => {
                for (o, t) in out.iter_mut().zip(&total) {
                    *o += t;
                }
            }
            Err(e) => {
                self.fall_back(&e);
                CpuKernel.kmeans(blocks, centres, k, out);
            }
        }
    }
}
