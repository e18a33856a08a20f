//! The serial writer thread: encodes reports in the configured wire format and
//! writes them to a tty, reopening it with back-off when it goes away (a USB
//! adapter unplugged, a pty closed). Reports wait in a bounded queue meanwhile.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_inline_default::serde_inline_default;

use super::{Report, wire};

/// The `[serial]` section.
#[serde_inline_default]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// A tty: `/dev/ttyUSB0`, `/dev/ttyTHS1` (Jetson), `/dev/serial0` (Pi).
    pub path: PathBuf,
    #[serde(default)]
    pub driver: SerialDriver,
    #[serde_inline_default(DEFAULT_BAUD)]
    pub baud: u32,
    #[serde_inline_default(DEFAULT_DATA_BITS)]
    pub data_bits: u8,
    #[serde(default)]
    pub parity: Parity,
    #[serde_inline_default(DEFAULT_STOP_BITS)]
    pub stop_bits: u8,
    #[serde(default)]
    pub format: WireFormat,
    /// Reports kept while the device is away; beyond it the oldest are dropped
    /// (and the receiver sees the gap in the sequence numbers).
    #[serde_inline_default(DEFAULT_QUEUE)]
    pub queue: usize,
}

/// 8N1 at 115200 baud, as the Pi's and the Jetson's serial consoles are set.
const DEFAULT_BAUD: u32 = 115_200;
const DEFAULT_DATA_BITS: u8 = 8;
const DEFAULT_STOP_BITS: u8 = 1;
const DEFAULT_QUEUE: usize = 256;

impl SerialConfig {
    pub fn validate(&self) -> Result<()> {
        if self.baud == 0 {
            bail!("serial.baud: expected a positive baud rate such as {DEFAULT_BAUD}");
        }
        if !(5..=8).contains(&self.data_bits) {
            bail!("serial.data_bits: expected 5, 6, 7 or 8");
        }
        if !(1..=2).contains(&self.stop_bits) {
            bail!("serial.stop_bits: expected 1 or 2");
        }
        if self.queue == 0 {
            bail!("serial.queue: expected at least 1");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialDriver {
    /// Any tty.
    #[default]
    Serialport,
    /// The Pi's own UART (ARM builds only).
    Rppal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Odd,
    Even,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    #[default]
    Ndjson,
    /// postcard, CRC-32, COBS-framed with a 0 delimiter (README).
    Binary,
}

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What the writer did with the reports handed to it, for the stats line and the
/// summary: every `seq` is either written, dropped (the receiver sees it as a
/// gap) or still queued.
#[derive(Debug, Default)]
pub struct SerialCounters {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct Serial {
    tx: Sender<Arc<Report>>,
    done: Receiver<()>,
    thread: JoinHandle<()>,
    pub counters: Arc<SerialCounters>,
}

impl Serial {
    pub fn start(config: SerialConfig) -> Serial {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let counters = Arc::new(SerialCounters::default());
        let writer = Writer::new(config, counters.clone());
        let thread = std::thread::Builder::new()
            .name("serial".into())
            .spawn(move || {
                writer.run(rx);
                let _ = done_tx.send(());
            })
            .expect("spawning the serial thread");
        Serial {
            tx,
            done,
            thread,
            counters,
        }
    }

    pub fn send(&self, report: Arc<Report>) {
        // The writer only ends after `finish`; a send error cannot happen before.
        let _ = self.tx.send(report);
    }

    /// Lets the writer drain its queue until `deadline`.
    pub fn finish(self, deadline: Instant) {
        drop(self.tx);
        let left = deadline.saturating_duration_since(Instant::now());
        if self.done.recv_timeout(left).is_ok() {
            let _ = self.thread.join();
        } else {
            log::warn!("serial: reports still queued at exit were not written");
        }
    }
}

/// Reports dropped since the queue last overflowed: always a run of consecutive
/// `seq`s, since the oldest goes first and nothing is written meanwhile.
struct DropEpisode {
    first: u32,
    last: u32,
    count: u64,
}

struct Writer {
    config: SerialConfig,
    port: Option<Box<dyn Write + Send>>,
    /// Encoded reports with their `seq`, oldest first.
    queue: VecDeque<(u32, Vec<u8>)>,
    seq: u32,
    retry_at: Instant,
    retry_delay: Duration,
    lost_since: Option<Instant>,
    dropping: Option<DropEpisode>,
    counters: Arc<SerialCounters>,
}

impl Writer {
    fn new(config: SerialConfig, counters: Arc<SerialCounters>) -> Writer {
        Writer {
            config,
            port: None,
            queue: VecDeque::new(),
            seq: 0,
            retry_at: Instant::now(),
            retry_delay: RETRY_FIRST,
            lost_since: None,
            dropping: None,
            counters,
        }
    }

    fn run(mut self, rx: Receiver<Arc<Report>>) {
        let mut closed = false;
        loop {
            if !closed {
                closed = self.receive(&rx);
            }
            self.connect();
            self.write();
            let stuck = self.port.is_none();
            if closed && (self.queue.is_empty() || stuck) {
                break;
            }
        }
        self.end_drop_episode();
        if let (Some((first, _)), Some((last, _))) = (self.queue.front(), self.queue.back()) {
            log::warn!(
                "serial {}: {} report(s) still queued at exit were not written (seq {first} to {last})",
                self.config.path.display(),
                self.queue.len()
            );
        }
    }

    /// Takes what has arrived, waiting as long as there is nothing else to do.
    /// Returns whether the sender is gone.
    fn receive(&mut self, rx: &Receiver<Arc<Report>>) -> bool {
        let wait = if self.port.is_none() {
            self.retry_at.saturating_duration_since(Instant::now())
        } else if self.queue.is_empty() {
            Duration::from_secs(3600)
        } else {
            Duration::ZERO
        };
        let mut next = rx.recv_timeout(wait);
        loop {
            match next {
                Ok(report) => self.enqueue(&report),
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => return true,
            }
            next = rx.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            });
        }
    }

    fn enqueue(&mut self, report: &Report) {
        let bytes = match self.config.format {
            WireFormat::Ndjson => wire::ndjson(self.seq, report),
            WireFormat::Binary => wire::binary(self.seq, report),
        };
        if self.queue.len() >= self.config.queue
            && let Some((dropped, _)) = self.queue.pop_front()
        {
            self.count_drop(dropped);
        }
        self.queue.push_back((self.seq, bytes));
        self.seq = self.seq.wrapping_add(1);
    }

    fn count_drop(&mut self, seq: u32) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        match &mut self.dropping {
            Some(episode) => {
                episode.last = seq;
                episode.count += 1;
            }
            None => {
                log::warn!(
                    "serial {}: queue full ({} reports); dropping the oldest, from seq {seq}",
                    self.config.path.display(),
                    self.config.queue
                );
                self.dropping = Some(DropEpisode {
                    first: seq,
                    last: seq,
                    count: 1,
                });
            }
        }
    }

    /// Logs the run of `seq`s dropped, once reports flow again (or at exit): the
    /// gap a receiver sees.
    fn end_drop_episode(&mut self) {
        if let Some(DropEpisode { first, last, count }) = self.dropping.take() {
            log::warn!(
                "serial {}: {count} report(s) dropped, seq {first} to {last}",
                self.config.path.display()
            );
        }
    }

    fn connect(&mut self) {
        if self.port.is_some() || Instant::now() < self.retry_at {
            return;
        }
        let path = self.config.path.display().to_string();
        match open(&self.config) {
            Ok(port) => {
                match self.lost_since.take() {
                    Some(since) => log::info!(
                        "serial {path}: back after {:.1} s; {} report(s) dropped in all so far",
                        since.elapsed().as_secs_f64(),
                        self.counters.dropped.load(Ordering::Relaxed)
                    ),
                    None => log::info!("serial {path}: open"),
                }
                self.port = Some(port);
                self.retry_delay = RETRY_FIRST;
            }
            Err(err) => {
                if self.lost_since.is_none() {
                    log::warn!("serial {path}: {err:#}; retrying until it appears");
                    self.lost_since = Some(Instant::now());
                }
                self.retry_at = Instant::now() + self.retry_delay;
                self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
            }
        }
    }

    fn write(&mut self) {
        while let (Some(port), Some((_, bytes))) = (self.port.as_mut(), self.queue.front()) {
            if let Err(err) = port.write_all(bytes).and_then(|_| port.flush()) {
                log::warn!(
                    "serial {}: lost ({err}); reopening",
                    self.config.path.display()
                );
                self.port = None;
                self.lost_since = Some(Instant::now());
                self.retry_at = Instant::now() + self.retry_delay;
                return;
            }
            self.queue.pop_front();
            self.counters.written.fetch_add(1, Ordering::Relaxed);
            self.end_drop_episode();
        }
    }
}

fn open(config: &SerialConfig) -> Result<Box<dyn Write + Send>> {
    match config.driver {
        SerialDriver::Serialport => open_serialport(config),
        SerialDriver::Rppal => open_rppal(config),
    }
}

fn open_serialport(config: &SerialConfig) -> Result<Box<dyn Write + Send>> {
    use serialport::{DataBits, StopBits};
    let data_bits = match config.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    };
    let parity = match config.parity {
        Parity::None => serialport::Parity::None,
        Parity::Odd => serialport::Parity::Odd,
        Parity::Even => serialport::Parity::Even,
    };
    let stop_bits = if config.stop_bits == 2 {
        StopBits::Two
    } else {
        StopBits::One
    };
    let port = serialport::new(config.path.to_string_lossy(), config.baud)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .timeout(Duration::from_secs(1))
        .open()
        .context("cannot open")?;
    Ok(Box::new(port))
}

#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
fn open_rppal(config: &SerialConfig) -> Result<Box<dyn Write + Send>> {
    use rppal::uart::{Parity as P, Uart};
    let parity = match config.parity {
        Parity::None => P::None,
        Parity::Odd => P::Odd,
        Parity::Even => P::Even,
    };
    let mut uart = Uart::with_path(
        &config.path,
        config.baud,
        parity,
        config.data_bits,
        config.stop_bits,
    )
    .context("cannot open the UART")?;
    uart.set_write_mode(true).context("UART write mode")?;
    Ok(Box::new(UartWriter(uart)))
}

#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
fn open_rppal(_config: &SerialConfig) -> Result<Box<dyn Write + Send>> {
    anyhow::bail!(
        "driver \"rppal\" is the Raspberry Pi's UART, only in ARM builds; use \"serialport\""
    )
}

/// rppal's UART has its own read/write methods rather than `std::io::Write`.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
struct UartWriter(rppal::uart::Uart);

#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
impl Write for UartWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(std::io::Error::other)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.drain().map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> SerialConfig {
        toml::from_str(&format!("path = \"/dev/ttyUSB0\"\n{extra}")).unwrap()
    }

    #[test]
    fn the_defaults_are_8n1_at_115200_with_a_queue() {
        let config = parse("");
        config.validate().unwrap();
        assert_eq!(
            (
                config.baud,
                config.data_bits,
                config.parity,
                config.stop_bits
            ),
            (115_200, 8, Parity::None, 1)
        );
        assert_eq!((config.queue, config.format), (256, WireFormat::Ndjson));
        assert_eq!(config.driver, SerialDriver::Serialport);
    }

    /// A receiver's end of the line: what the writer managed to write.
    #[derive(Clone, Default)]
    struct Peer(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Peer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A device unplugged: every write fails.
    struct Unplugged;

    impl Write for Unplugged {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(5))
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn report(frame: u64) -> Report {
        Report {
            image: None,
            frame,
            captured_unix_ms: 0.0,
            latency_ms: 1.0,
            stages_ms: Default::default(),
            results: edgebone::Results::Top(Vec::new()),
        }
    }

    /// The `seq` of every line the peer received.
    fn seqs(peer: &Peer) -> Vec<u64> {
        let bytes = peer.0.lock().unwrap();
        bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_slice::<serde_json::Value>(line).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_peer_away_loses_the_oldest_reports_and_the_count_is_the_seq_gap() {
        let mut config = parse("queue = 4");
        config.path = "/nonexistent/ttyEDGE".into();
        let counters = Arc::new(SerialCounters::default());
        let mut writer = Writer::new(config, counters.clone());
        let peer = Peer::default();
        writer.port = Some(Box::new(peer.clone()));
        for frame in 0..3 {
            writer.enqueue(&report(frame));
            writer.write();
        }
        // Unplugged: the first write fails and the report stays queued; the
        // device path is missing, so it stays away while 10 more reports arrive.
        writer.port = Some(Box::new(Unplugged));
        for frame in 3..13 {
            writer.enqueue(&report(frame));
            writer.write();
            writer.connect();
        }
        assert!(writer.port.is_none());
        assert_eq!(writer.queue.len(), 4);
        // Plugged in again: the newest 4 go out.
        writer.port = Some(Box::new(peer.clone()));
        writer.write();
        let received = seqs(&peer);
        assert_eq!(received, [0, 1, 2, 9, 10, 11, 12]);
        let gap: u64 = received.windows(2).map(|w| w[1] - w[0] - 1).sum();
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 6);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), gap);
        assert_eq!(counters.written.load(Ordering::Relaxed), 7);
        assert!(
            writer.dropping.is_none(),
            "the episode ends once reports flow"
        );
    }

    #[test]
    fn out_of_range_settings_are_named() {
        for (setting, message) in [
            (
                "baud = 0",
                "serial.baud: expected a positive baud rate such as 115200",
            ),
            ("data_bits = 4", "serial.data_bits: expected 5, 6, 7 or 8"),
            ("data_bits = 9", "serial.data_bits: expected 5, 6, 7 or 8"),
            ("stop_bits = 0", "serial.stop_bits: expected 1 or 2"),
            ("stop_bits = 3", "serial.stop_bits: expected 1 or 2"),
            ("queue = 0", "serial.queue: expected at least 1"),
        ] {
            let err = parse(setting).validate().unwrap_err();
            assert_eq!(err.to_string(), message, "{setting}");
        }
        for setting in ["data_bits = 5", "stop_bits = 2", "queue = 1"] {
            parse(setting).validate().unwrap();
        }
    }
}
