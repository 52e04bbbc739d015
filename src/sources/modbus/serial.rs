//! The serial port of an RTU bus: opened with the line settings from the
//! config (tokio-serial without default features: no libudev), exclusive
//! while open, and kept open across resynchronisations.
//!
//! Exclusive access (TIOCEXCL and an flock) keeps other programs off the
//! bus while gaswatch polls it: two masters on one RS-485 line garble each
//! other's frames. The exclusivity is released when the port closes,
//! because Linux keeps TIOCEXCL on a pseudo-terminal until its master side
//! closes, so a later reopen would be refused (EBUSY) to a non-root daemon.
//! On a real UART the last close clears it anyway.
//!
//! The port stays open when the poller resynchronises after a timeout or a
//! garbled frame: the poller drops its Modbus context, flushes the driver's
//! input, listens on the same port until the line has been quiet for the
//! timeout, and attaches a new context to it ([`BusPort`] is a shared
//! handle). Closing the port would gain nothing for the resync, and closing
//! a tty drops DTR and RTS (HUPCL), which RS-485 adapters that switch
//! direction on RTS and converters powered from DTR do not take kindly. The
//! port is reopened only after an I/O error (an unplugged USB adapter).

use super::{Parity, SerialConfig};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_serial::{SerialPort, SerialStream};

/// The open port; gives up exclusive access when it closes.
#[derive(Debug)]
struct Port(SerialStream);

impl Drop for Port {
    fn drop(&mut self) {
        // Best effort: the descriptor closes right after.
        let _ = self.0.set_exclusive(false);
    }
}

/// A handle to an open serial port. Clones share the port; it closes when
/// the last clone is dropped. Only one clone is read or written at a time
/// (the poller's current Modbus context, or the poller while it waits for
/// the line to go quiet).
#[derive(Debug, Clone)]
pub(crate) struct BusPort(Arc<Mutex<Port>>);

impl BusPort {
    /// Opens `line.path` with the line's settings, exclusively, and drops
    /// whatever the driver had buffered. Opening is non-blocking.
    pub(crate) fn open(line: &SerialConfig) -> io::Result<BusPort> {
        let builder = tokio_serial::new(line.path.as_str(), line.baud)
            // Validation allows 8 data bits only (RTU).
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(match line.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            })
            .stop_bits(if line.stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            })
            .flow_control(tokio_serial::FlowControl::None);
        let port = SerialStream::open(&builder).map_err(|e| {
            io::Error::new(
                io::Error::from(e.clone()).kind(),
                format!("cannot open serial port {}: {e}", line.path),
            )
        })?;
        let port = BusPort(Arc::new(Mutex::new(Port(port))));
        port.clear_input()?;
        Ok(port)
    }

    /// Drops what the driver received and has not been read yet.
    pub(crate) fn clear_input(&self) -> io::Result<()> {
        self.lock()
            .0
            .clear(tokio_serial::ClearBuffer::Input)
            .map_err(io::Error::from)
    }

    fn lock(&self) -> MutexGuard<'_, Port> {
        // Nothing can be left half-done by a panic while the lock is held
        // (one read or write call): keep using the port.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AsyncRead for BusPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.lock().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for BusPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.lock().0).poll_write(cx, buf)
    }

    /// Nothing to do: a write is in the driver once `poll_write` returns.
    /// tokio-serial's flush is `tcdrain`, a blocking syscall that would hold
    /// a runtime thread until the UART has sent every byte (about 9 ms per
    /// request at 9600 baud). The request timeout covers the send time
    /// instead (validation checks it does).
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
