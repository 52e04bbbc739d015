//! Opening a serial port for Modbus RTU: line settings from the config, no
//! libudev (tokio-serial without default features), exclusive while open.
//!
//! Exclusive access (TIOCEXCL and an flock) keeps other programs off the
//! bus while gaswatch polls it: two masters on one RS-485 line garble each
//! other's frames. The exclusivity is released when the port is dropped
//! ([`BusPort`]), because Linux keeps TIOCEXCL on a pseudo-terminal until
//! its master side closes, so a reopen after a resync would otherwise be
//! refused (EBUSY) to a non-root daemon. On a real UART the last close
//! clears it anyway.

use super::{Parity, SerialConfig};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_serial::{SerialPort, SerialStream};

/// An open serial port; gives up exclusive access when dropped.
#[derive(Debug)]
pub(crate) struct BusPort(SerialStream);

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
        port.clear(tokio_serial::ClearBuffer::All)
            .map_err(io::Error::from)?;
        Ok(BusPort(port))
    }
}

impl Drop for BusPort {
    fn drop(&mut self) {
        // Best effort: the descriptor closes right after.
        let _ = self.0.set_exclusive(false);
    }
}

impl AsyncRead for BusPort {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for BusPort {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
