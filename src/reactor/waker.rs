//! Wakes the event loop from another thread: workers with completions, and
//! the shutdown handle. Each driver waits on its own kind of wake-up.

use std::io;

/// The loop's wake-up, for whichever driver runs.
pub enum Waker {
    /// A mio waker registered on the epoll/kqueue poller.
    Mio(mio::Waker),
    /// An eventfd the io_uring driver keeps a read posted on.
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    EventFd(nix::sys::eventfd::EventFd),
}

impl Waker {
    /// Wakes the loop; cheap when it is already awake.
    pub fn wake(&self) -> io::Result<()> {
        match self {
            Waker::Mio(waker) => waker.wake(),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Waker::EventFd(fd) => match fd.write(1) {
                // The counter is full: a wake-up is already pending.
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => Ok(()),
                Err(e) => Err(e.into()),
            },
        }
    }
}
