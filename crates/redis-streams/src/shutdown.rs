//! The caller's shutdown signal, which every wait of the source races against.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::FutureExt;

/// The caller's shutdown signal, remembered once it fired.
pub(crate) struct Shutdown<'a> {
    signal: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    fired: bool,
}

impl<'a> Shutdown<'a> {
    pub fn new(signal: impl Future<Output = ()> + Send + 'a) -> Self {
        Shutdown {
            signal: Box::pin(signal),
            fired: false,
        }
    }

    /// Runs `work` unless the signal fires first (`None`; `work` is dropped).
    pub async fn guard<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        if self.fired {
            return None;
        }
        tokio::select! {
            biased;
            () = &mut self.signal => {
                self.fired = true;
                None
            }
            out = work => Some(out),
        }
    }

    /// Whether the signal has fired, looking without waiting.
    pub fn fired_now(&mut self) -> bool {
        if !self.fired && (&mut self.signal).now_or_never().is_some() {
            self.fired = true;
        }
        self.fired
    }

    /// Sleeps `d`; `false` when the signal fired instead.
    pub async fn sleep(&mut self, d: Duration) -> bool {
        self.guard(tokio::time::sleep(d)).await.is_some()
    }
}
