//! A read buffer sized to the traffic, shared by the TLS read-ahead (tunnel-transport) and the
//! forwarder (tunnel-mux). Pure bookkeeping: the callers do the reads.
//!
//! Both read from a socket into memory of their own. A fixed 64 KiB buffer per connection
//! would pin 64 KiB for every idle connection (25 MiB for 200 keep-alive connections), and
//! allocating one per wake-up would zero 64 KiB per request. So the buffer starts at
//! [`SMALL_READ`], grows to its maximum once a read fills it, and is given back when a wake-up
//! moved less than [`SMALL_READ`] (an idle or chatty connection). A bulk transfer reads far
//! more per wake-up and keeps its large buffer, so it is not zeroed again each time.

/// First buffer after an idle spell, and the least a wake-up must move to keep the buffer.
pub const SMALL_READ: usize = 8 * 1024;

/// See the module docs. Call [`ReadBuffer::space`], read into it, then report the outcome
/// with [`ReadBuffer::filled`] or [`ReadBuffer::parked`].
#[derive(Debug)]
pub struct ReadBuffer {
    /// Empty while idle.
    buf: Vec<u8>,
    max: usize,
    /// The last read filled the buffer: the next one gets `max` bytes.
    grow: bool,
    /// Bytes read since the reader last returned `Pending`.
    cycle: usize,
}

impl ReadBuffer {
    /// A buffer that grows up to `max` bytes (at least 1); nothing is allocated yet.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.max(1),
            grow: false,
            cycle: 0,
        }
    }

    /// Space for the next read. Its earlier contents are not kept: call it only once the
    /// bytes of the last read have been used.
    pub fn space(&mut self) -> &mut [u8] {
        let want = if self.grow {
            self.max
        } else {
            SMALL_READ.min(self.max)
        };
        if self.buf.len() < want {
            self.buf = vec![0; want];
        }
        &mut self.buf
    }

    /// The last read put `n` bytes at the start of [`ReadBuffer::space`].
    pub fn filled(&mut self, n: usize) {
        self.grow |= n == self.buf.len();
        self.cycle += n;
    }

    /// The reader returned `Pending`: give the buffer back if this wake-up moved little.
    pub fn parked(&mut self) {
        if self.cycle < SMALL_READ {
            self.release();
        }
        self.cycle = 0;
    }

    /// Give the buffer back now (the reader is done).
    pub fn release(&mut self) {
        self.buf = Vec::new();
        self.grow = false;
    }

    /// The buffer as last handed out by [`ReadBuffer::space`] (empty while released).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes allocated now (0 while released).
    pub fn allocated(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_small_grows_on_a_full_read_and_is_released_when_light() {
        let mut b = ReadBuffer::new(64 * 1024);
        assert_eq!(b.allocated(), 0);
        assert_eq!(b.space().len(), SMALL_READ);
        b.filled(SMALL_READ);
        assert_eq!(b.space().len(), 64 * 1024);
        b.filled(100);
        b.parked();
        assert_eq!(
            b.allocated(),
            64 * 1024,
            "a wake-up that moved 8 KiB+ keeps the buffer"
        );
        b.filled(100);
        b.parked();
        assert_eq!(b.allocated(), 0, "a light wake-up gives it back");
        assert_eq!(
            b.space().len(),
            SMALL_READ,
            "and the next one starts small again"
        );
    }

    #[test]
    fn a_maximum_below_the_small_size_is_respected() {
        let mut b = ReadBuffer::new(100);
        assert_eq!(b.space().len(), 100);
        b.filled(100);
        assert_eq!(b.space().len(), 100);
        assert_eq!(ReadBuffer::new(0).space().len(), 1);
    }
}
