//! `edgebone run`: the device program, driven as a process: raw I420 frames made
//! from test photos piped in, reports read back from stdout and from a
//! pseudo-terminal, signals.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{data, model, path};
use image::{RgbImage, imageops};
use serde_json::Value;
use serialport::{SerialPort, TTYPort};

const PHOTOS: [(&str, &str); 3] = [
    ("n01558993_robin.JPEG", "robin"),
    ("n01882714_koala.JPEG", "koala"),
    ("n02056570_king_penguin.JPEG", "king penguin"),
];
/// Frames per photo in the piped video.
const HOLD: usize = 4;
const W: u32 = 320;
const H: u32 = 240;

/// One `edgebone run` at a time: the timing tests (latency, exit within 1 s) must
/// not share the 2 cores with each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgebone")
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    write_config_for("mobilenet_v2", dir, body)
}

fn write_config_for(bundle: &str, dir: &Path, body: &str) -> PathBuf {
    let file = dir.join("edgebone.toml");
    let text = format!(
        "[model]\nbundle = \"{}\"\nthreads = 1\n{body}",
        path(&model(bundle))
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// A running `edgebone run`, its stdout lines and stderr collected by threads.
struct Device {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Device {
    fn start(config: &Path, stdin: Stdio) -> Device {
        let mut child = Command::new(bin())
            .args(["run", "--config", path(config)])
            .env("RUST_LOG", "info")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let _ = tx.send(line.unwrap());
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            err.read_to_string(&mut text).unwrap();
            text
        });
        Device {
            child,
            lines,
            stderr,
        }
    }

    /// The next NDJSON report, waiting at most `timeout`.
    fn report(&self, timeout: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")))
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Exit code, the remaining reports and stderr, within `timeout`.
    fn wait(mut self, timeout: Duration) -> (i32, Vec<Value>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("edgebone did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = self.stderr.join().unwrap();
        let rest = self
            .lines
            .iter()
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (status.code().unwrap_or(-1), rest, stderr)
    }
}

/// The photos as raw I420 video, as a camera or `ffmpeg -pix_fmt yuv420p` sends it:
/// each fitted into W×H (black bars), held for HOLD frames.
fn yuv_video() -> Vec<u8> {
    PHOTOS
        .iter()
        .flat_map(|(file, _)| {
            let photo = image::open(data(&format!("images/imagenet-test/{file}")))
                .unwrap_or_else(|e| panic!("{file}: {e}"))
                .to_rgb8();
            i420(&letterbox(&photo, W, H)).repeat(HOLD)
        })
        .collect()
}

/// `photo` scaled to fit `width`×`height` keeping its aspect, centred on black.
fn letterbox(photo: &RgbImage, width: u32, height: u32) -> RgbImage {
    let scale = f64::min(
        f64::from(width) / f64::from(photo.width()),
        f64::from(height) / f64::from(photo.height()),
    );
    let fit = |side: u32, bound: u32| ((f64::from(side) * scale).round() as u32).clamp(1, bound);
    let (w, h) = (fit(photo.width(), width), fit(photo.height(), height));
    // Catmull-Rom: bicubic, as ffmpeg's scaler by default.
    let scaled = imageops::resize(photo, w, h, imageops::FilterType::CatmullRom);
    let mut canvas = RgbImage::new(width, height);
    imageops::replace(
        &mut canvas,
        &scaled,
        i64::from((width - w) / 2),
        i64::from((height - h) / 2),
    );
    canvas
}

/// BT.601 limited range (ffmpeg's default matrix for `yuv420p`) of one pixel.
fn bt601(rgb: [u8; 3]) -> [f32; 3] {
    let [r, g, b] = rgb.map(f32::from);
    [
        16.0 + 0.257 * r + 0.504 * g + 0.098 * b,
        128.0 - 0.148 * r - 0.291 * g + 0.439 * b,
        128.0 + 0.439 * r - 0.368 * g - 0.071 * b,
    ]
}

/// Planar I420 of an even-sized image: full-size Y, then U and V each the mean of
/// a 2×2 block.
fn i420(image: &RgbImage) -> Vec<u8> {
    let (w, h) = image.dimensions();
    let yuv = |x: u32, y: u32| bt601(image.get_pixel(x, y).0);
    let mut planes: Vec<u8> = image
        .pixels()
        .map(|p| bt601(p.0)[0].round() as u8)
        .collect();
    for channel in [1, 2] {
        for y in (0..h).step_by(2) {
            for x in (0..w).step_by(2) {
                let sum: f32 = [(0, 0), (1, 0), (0, 1), (1, 1)]
                    .iter()
                    .map(|(dx, dy)| yuv(x + dx, y + dy)[channel])
                    .sum();
                planes.push((sum / 4.0).round() as u8);
            }
        }
    }
    planes
}

#[test]
fn the_test_video_is_bt601_limited_range_i420() {
    let mut image = RgbImage::from_pixel(4, 2, image::Rgb([255, 255, 255]));
    image.put_pixel(2, 0, image::Rgb([0, 0, 0]));
    image.put_pixel(3, 1, image::Rgb([255, 0, 0]));
    // Y row by row; then U and V of the left (all white) and right 2×2 blocks.
    let expected = [235, 235, 16, 235, 235, 235, 235, 82, 128, 119, 128, 156];
    assert_eq!(i420(&image), expected);

    // A 4:3 photo in a 16:9 frame: bars left and right, black as Y 16.
    let photo = RgbImage::from_pixel(40, 30, image::Rgb([200, 200, 200]));
    let framed = letterbox(&photo, 32, 18);
    assert_eq!(framed.get_pixel(0, 9).0, [0, 0, 0]);
    assert_eq!(framed.get_pixel(31, 9).0, [0, 0, 0]);
    assert_eq!(framed.get_pixel(16, 0).0, [200, 200, 200]);
    assert_eq!(framed.get_pixel(16, 17).0, [200, 200, 200]);
    assert_eq!(i420(&framed)[9 * 32], 16);
}

#[test]
fn raw_yuv420_video_is_classified_frame_by_frame() {
    let _one = one_at_a_time();
    let video = yuv_video();
    let frame_len = (W * H * 3 / 2) as usize;
    assert_eq!(video.len(), frame_len * HOLD * PHOTOS.len());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[task]\nkind = \"classify\"\ntop_k = 1\n\
             [source]\nkind = \"pipe\"\nformat = \"yuv420\"\nwidth = {W}\nheight = {H}\n\
             [capture]\nmode = \"every-frame\"\n"
        ),
    );
    let mut device = Device::start(&config, Stdio::piped());
    let mut stdin = device.child.stdin.take().unwrap();
    stdin.write_all(&video).unwrap();
    stdin.write_all(&video[..frame_len / 3]).unwrap(); // a truncated last frame
    drop(stdin);
    let (code, reports, stderr) = device.wait(Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    let frames: Vec<u64> = reports
        .iter()
        .map(|r| r["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(
        frames,
        (0..(HOLD * PHOTOS.len()) as u64).collect::<Vec<_>>()
    );
    for report in &reports {
        let photo = report["frame"].as_u64().unwrap() as usize / HOLD;
        assert_eq!(report["top"][0]["label"], PHOTOS[photo].1, "{report}");
        assert!(report["latency_ms"].as_f64().unwrap() > 0.0);
    }
    assert!(stderr.contains("truncated frame"), "{stderr}");
    let summary = summary(&stderr);
    assert_eq!(summary["truncated"], 1, "{summary}");
    assert_eq!(summary["processed"], reports.len(), "{summary}");
}

/// The `summary {json}` line logged at exit.
fn summary(stderr: &str) -> Value {
    let line = stderr
        .lines()
        .find_map(|l| l.split_once("summary ").map(|(_, json)| json))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    serde_json::from_str(line).unwrap()
}

fn folder_source(fps: u32) -> String {
    format!(
        "[source]\nkind = \"folder\"\npath = \"{}\"\nfps = {fps}\nrepeat = true\n",
        path(&data("images/imagenet-test"))
    )
}

#[test]
fn sigterm_while_streaming_exits_cleanly_and_reports_every_processed_frame() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("{}[stats]\ninterval_s = 0.5\n", folder_source(30)),
    );
    let device = Device::start(&config, Stdio::null());
    let first = device
        .report(Duration::from_secs(30))
        .expect("a first report");
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    device.terminate();
    let (code, rest, stderr) = device.wait(Duration::from_secs(5));
    let took = sent.elapsed();
    assert_eq!(code, 0, "{stderr}");
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
    let mut frames = vec![first["frame"].as_u64().unwrap()];
    frames.extend(rest.iter().map(|r| r["frame"].as_u64().unwrap()));
    assert!(frames.windows(2).all(|w| w[0] < w[1]), "{frames:?}");
    let summary = summary(&stderr);
    assert_eq!(summary["processed"], frames.len(), "{summary}\n{frames:?}");
    let stats = stderr
        .lines()
        .find(|l| l.contains("stats: "))
        .expect(&stderr);
    // The memory resident between frames, as `memory N kB (anon M kB)`.
    let memory: Vec<u64> = stats
        .split_once(", memory ")
        .unwrap_or_else(|| panic!("no memory in {stats}"))
        .1
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        matches!(memory[..], [rss, anon] if rss > anon && anon > 1000),
        "{stats}"
    );
}

/// 30 fps in, MobileNetV2 on this machine: the loop keeps up or drops frames;
/// capture→report latency stays bounded either way.
#[test]
fn a_30_fps_source_keeps_latency_bounded() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &folder_source(30));
    let device = Device::start(&config, Stdio::null());
    device
        .report(Duration::from_secs(30))
        .expect("a first report");
    std::thread::sleep(Duration::from_secs(4));
    device.terminate();
    let (code, _, stderr) = device.wait(Duration::from_secs(5));
    assert_eq!(code, 0, "{stderr}");
    let summary = summary(&stderr);
    let captured = summary["captured"].as_u64().unwrap();
    let processed = summary["processed"].as_u64().unwrap();
    let dropped = summary["dropped"].as_u64().unwrap();
    // Every captured frame is either processed or counted as dropped (one may be
    // in flight at exit).
    assert!(captured - processed - dropped <= 1, "{summary}");
    assert!(captured >= 60, "{summary}");
    let p99 = summary["latency_ms"]["p99"].as_f64().unwrap();
    // Newest-frame-wins: latency is a frame's own processing, never a queue.
    assert!(p99 < 500.0, "{summary}");
    eprintln!("30 fps folder source: {summary}");
}

/// bus.jpg alone in a folder read once, every frame processed: the run ends
/// by itself.
fn bus_folder(dir: &Path) -> (PathBuf, String) {
    let photos = dir.join("photos");
    std::fs::create_dir(&photos).unwrap();
    let bus = photos.join("bus.jpg");
    std::fs::copy(data("images/bus.jpg"), &bus).unwrap();
    let source = format!(
        "[source]\nkind = \"folder\"\npath = \"{}\"\n[capture]\nmode = \"every-frame\"\n",
        path(&photos)
    );
    (bus, source)
}

#[test]
fn the_detect_task_reports_boxes_per_frame() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (bus, source) = bus_folder(dir.path());
    let task = "[task]\nkind = \"detect\"\nconf = 0.7\n";
    let config = write_config_for("yolov5n", dir.path(), &format!("{task}{source}"));
    let device = Device::start(&config, Stdio::null());
    let (code, reports, stderr) = device.wait(Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reports.len(), 1, "{stderr}");
    assert_eq!(reports[0]["image"], path(&bus));
    let labels: Vec<&str> = reports[0]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["person", "person"], "{}", reports[0]);
}

#[test]
fn the_features_task_reports_the_embedding_and_writes_taps() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (_, source) = bus_folder(dir.path());
    let task = "[task]\nkind = \"features\"\ntaps_dir = \"taps\"\ntaps_every_s = 0.0\n";
    let config = write_config(dir.path(), &format!("{task}{source}"));
    let device = Device::start(&config, Stdio::null());
    let (code, reports, stderr) = device.wait(Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reports.len(), 1, "{stderr}");
    assert_eq!(reports[0]["embedding"].as_array().unwrap().len(), 1280);
    assert_eq!(reports[0]["features"].as_array().unwrap().len(), 4);
    // taps_dir is relative to the config file.
    for file in ["bus.features.18.npy", "bus.embedding.npy"] {
        let npy = std::fs::read(dir.path().join("taps").join(file)).unwrap();
        assert!(npy.starts_with(b"\x93NUMPY"), "{file}");
    }
}

/// A pseudo-terminal pair whose slave is reached through a symlink, as udev's
/// /dev/serial/by-id links reach USB adapters.
fn pty(link: &Path) -> TTYPort {
    let (inheritable, slave) = TTYPort::pair().unwrap();
    // `pair` opens the master without O_CLOEXEC, so every `edgebone` spawned after
    // it would hold the master open and "unplugging" it would never reach the
    // program; the clone is close-on-exec.
    let mut master = inheritable.try_clone_native().unwrap();
    drop(inheritable);
    let name = slave.name().unwrap();
    drop(slave);
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(name, link).unwrap();
    master.set_timeout(Duration::from_millis(200)).unwrap();
    master
}

fn serial_config(dir: &Path, link: &Path, format: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "{}[stdout]\nenabled = false\n[serial]\npath = \"{}\"\nformat = \"{format}\"\n",
            folder_source(20),
            path(link)
        ),
    )
}

/// Reads from the master until `want` delimited messages arrived (or 30 s).
fn read_messages(master: &mut TTYPort, delimiter: u8, want: usize) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let start = Instant::now();
    while buf.iter().filter(|b| **b == delimiter).count() < want {
        assert!(start.elapsed() < Duration::from_secs(30), "only {buf:?}");
        match master.read(&mut chunk) {
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            // EIO until the program has opened the slave end.
            Err(e) if e.raw_os_error() == Some(5) || e.kind() == std::io::ErrorKind::BrokenPipe => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    }
    buf.split(|b| *b == delimiter)
        .take(want)
        .map(<[u8]>::to_vec)
        .collect()
}

/// A microcontroller's view of the binary format (README, "Serial reports").
#[derive(Debug, serde::Deserialize)]
struct Wire {
    seq: u32,
    frame: u64,
    _captured_unix_ms: u64,
    _latency_us: u32,
    results: WireResults,
}

#[derive(Debug, serde::Deserialize)]
enum WireResults {
    Top(Vec<(u16, f32)>),
    #[allow(dead_code)]
    Detections(Vec<(u16, f32, [f32; 4])>),
    #[allow(dead_code)]
    Embedding(Vec<f32>),
}

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// COBS-decodes and checks the CRC; `Err` names what is wrong.
fn decode_binary(frame: &[u8]) -> Result<Wire, String> {
    let payload = cobs::decode_vec(frame).map_err(|e| format!("COBS: {e:?}"))?;
    if payload.len() < 4 {
        return Err("short frame".into());
    }
    let (body, crc) = payload.split_at(payload.len() - 4);
    if CRC32.checksum(body).to_le_bytes() != crc {
        return Err("CRC mismatch".into());
    }
    postcard::from_bytes(body).map_err(|e| format!("postcard: {e}"))
}

fn assert_consecutive(seqs: &[u32]) {
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[test]
fn binary_serial_reports_survive_the_device_going_away() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyEDGE");
    let mut master = pty(&link);
    let config = serial_config(dir.path(), &link, "binary");
    let device = Device::start(&config, Stdio::null());
    // The first message may have been cut by opening mid-stream: skip it.
    let frames = read_messages(&mut master, 0, 6);
    let first: Vec<Wire> = frames[1..]
        .iter()
        .map(|f| decode_binary(f).unwrap())
        .collect();
    assert_consecutive(&first.iter().map(|w| w.seq).collect::<Vec<_>>());
    assert!(first.windows(2).all(|w| w[0].frame < w[1].frame));
    let WireResults::Top(top) = &first[0].results else {
        panic!("{:?}", first[0])
    };
    assert_eq!(top.len(), 5);
    // A flipped bit is caught by the CRC.
    let mut corrupt = cobs::decode_vec(&frames[2]).unwrap();
    corrupt[3] ^= 0x01;
    let corrupt = cobs::encode_vec(&corrupt);
    assert_eq!(decode_binary(&corrupt).unwrap_err(), "CRC mismatch");

    // The device goes away (the adapter unplugged), then comes back.
    drop(master);
    std::thread::sleep(Duration::from_millis(700));
    let mut master = pty(&link);
    let frames = read_messages(&mut master, 0, 5);
    let after: Vec<Wire> = frames[1..]
        .iter()
        .map(|f| decode_binary(f).unwrap())
        .collect();
    assert_consecutive(&after.iter().map(|w| w.seq).collect::<Vec<_>>());
    assert!(after[0].seq > first.last().unwrap().seq);
    device.terminate();
    let (code, _, stderr) = device.wait(Duration::from_secs(5));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("lost ("), "{stderr}");
    assert!(stderr.contains("back after"), "{stderr}");
}

#[test]
fn ndjson_serial_lines_carry_seq_and_crc() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyEDGE");
    let mut master = pty(&link);
    let config = serial_config(dir.path(), &link, "ndjson");
    let device = Device::start(&config, Stdio::null());
    let lines = read_messages(&mut master, b'\n', 5);
    device.terminate();
    let (code, stdout, stderr) = device.wait(Duration::from_secs(5));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty(), "stdout reports were disabled");
    let mut seqs = Vec::new();
    for line in &lines[1..] {
        let value: Value = serde_json::from_slice(line).unwrap();
        let text = std::str::from_utf8(line).unwrap();
        let cut = text.rfind(",\"crc\":").unwrap();
        let crc = format!("{:08x}", CRC32.checksum(&line[..cut]));
        assert_eq!(value["crc"], crc.as_str(), "{text}");
        assert_eq!(value["top"].as_array().unwrap().len(), 5);
        // The serial line keeps its fields: stdout's `image` is not among them.
        assert!(value.get("image").is_none(), "{text}");
        seqs.push(value["seq"].as_u64().unwrap() as u32);
    }
    assert_consecutive(&seqs);
}

#[test]
fn gpio_rules_log_levels_and_rest_at_exit() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let rules = "[gpio]\ndriver = \"log\"\n\
                 [[gpio.rules]]\nclass = \"robin\"\nmin_score = 0.5\npin = 17\naction = \"hold\"\nms = 300\n\
                 [[gpio.rules]]\npin = 27\naction = \"pulse\"\nms = 20\n";
    let config = write_config(dir.path(), &format!("{}{rules}", folder_source(30)));
    let device = Device::start(&config, Stdio::null());
    device.report(Duration::from_secs(30)).expect("a report");
    std::thread::sleep(Duration::from_millis(500));
    device.terminate();
    let (code, _, stderr) = device.wait(Duration::from_secs(5));
    assert_eq!(code, 0, "{stderr}");
    let levels: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split_once("gpio 27: ").map(|(_, level)| level))
        .collect();
    // Safe at start, pulses up and down, safe at exit.
    assert_eq!(levels.first(), Some(&"low"), "{stderr}");
    assert!(levels.contains(&"high"), "{stderr}");
    assert_eq!(levels.last(), Some(&"low"), "{stderr}");
    assert!(stderr.contains("gpio 17: low"), "{stderr}");
}

#[test]
fn print_config_shows_the_defaults() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &folder_source(15));
    let out = Command::new(bin())
        .args(["run", "--config", path(&config), "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "kind = \"classify\"",
        "top_k = 5",
        "mode = \"live\"",
        "interval_s = 10.0",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
}

fn start_error(body: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), body);
    let out = Command::new(bin())
        .args(["run", "--config", path(&config)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap(), stderr)
}

#[test]
fn bad_configs_and_devices_fail_at_start_with_one_clear_line() {
    let _one = one_at_a_time();
    let pipe = "[source]\nkind = \"pipe\"\nformat = \"yuv420\"\nwidth = 64\nheight = 48\n";
    let cases = [
        (pipe.replace("format", "fromat"), "unknown field `fromat`"),
        (pipe.replace("yuv420", "yuv444"), "unknown variant `yuv444`"),
        (
            format!("{pipe}path = \"/nonexistent/fifo\"\n"),
            "/nonexistent/fifo",
        ),
        (
            format!(
                "{pipe}[gpio]\ndriver = \"cdev\"\nchip = \"/dev/gpiochip99\"\n[[gpio.rules]]\npin = 400\naction = \"hold\"\nms = 5\n"
            ),
            "pin 400",
        ),
        (
            "[source]\nkind = \"v4l\"\nformat = \"nv12\"\nwidth = 64\nheight = 48\n".into(),
            "V4L2 capture supports \"mjpeg\" or \"yuyv\"",
        ),
    ];
    for (body, expected) in cases {
        let (code, stderr) = start_error(&body);
        assert_ne!(code, 0, "{body}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(expected), "{expected} in {stderr}");
    }
}

#[test]
fn a_missing_camera_is_retried_not_fatal() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[source]\nkind = \"v4l\"\ndevice = \"/dev/video-missing\"\nwidth = 640\nheight = 480\n\
         [capture]\nretry_initial_ms = 50\nretry_max_ms = 100\n",
    );
    let device = Device::start(&config, Stdio::null());
    std::thread::sleep(Duration::from_millis(1200));
    device.terminate();
    let (code, reports, stderr) = device.wait(Duration::from_secs(5));
    assert_eq!(code, 0, "{stderr}");
    assert!(reports.is_empty());
    assert!(stderr.contains("/dev/video-missing"), "{stderr}");
    assert!(stderr.matches("retry").count() >= 3, "{stderr}");
}

#[test]
fn a_named_pipe_waits_for_its_next_writer() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("frames");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let config = write_config(
        dir.path(),
        &format!(
            "[source]\nkind = \"pipe\"\npath = \"{}\"\nformat = \"rgb24\"\nwidth = 64\nheight = 64\n\
             [capture]\nmode = \"every-frame\"\nretry_initial_ms = 50\n",
            path(&fifo)
        ),
    );
    let device = Device::start(&config, Stdio::null());
    let frame = vec![128u8; 64 * 64 * 3];
    for _writer in 0..2 {
        // Each writer (a restarted camera process) sends two frames and closes.
        let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        pipe.write_all(&frame.repeat(2)).unwrap();
        drop(pipe);
        for _ in 0..2 {
            device.report(Duration::from_secs(30)).expect("a report");
        }
    }
    device.terminate();
    let (code, _, stderr) = device.wait(Duration::from_secs(5));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("the writer closed the pipe"), "{stderr}");
    assert_eq!(summary(&stderr)["processed"], 4, "{stderr}");
}
