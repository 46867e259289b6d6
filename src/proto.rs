//! The codecs of `junction-proto`, and the framing of a connection's input
//! ring: where the next JSON-RPC line or MCP1 frame ends.

pub use junction_proto::*;

/// JSON-RPC 2.0 lines: the codec, and the search for a line in a ring.
pub mod jsonrpc {
    pub use junction_proto::jsonrpc::*;

    use crate::buffer::RingBuffer;

    /// Where the search for the end of the current line stands.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Line {
        /// A complete line of `len` bytes (newline and any `\r` excluded);
        /// `consumed` bytes (with the newline) make up the frame.
        Complete {
            /// Bytes of the line without its terminator.
            len: usize,
            /// Bytes to drop from the ring once the line is handled.
            consumed: usize,
        },
        /// No newline yet; `scanned` bytes need not be searched again.
        Partial {
            /// Bytes already searched.
            scanned: usize,
        },
        /// The line is longer than the limit.
        TooLong,
    }

    /// Finds the next line in `ring`, resuming the search at `scanned`.
    pub fn next_line(ring: &RingBuffer, scanned: usize, max_frame: usize) -> Line {
        match ring.find(b'\n', scanned) {
            Some(nl) => {
                let len = if nl > 0 && ring.byte(nl - 1) == Some(b'\r') {
                    nl - 1
                } else {
                    nl
                };
                if len > max_frame {
                    Line::TooLong
                } else {
                    Line::Complete {
                        len,
                        consumed: nl + 1,
                    }
                }
            }
            None if ring.len() > max_frame + 1 => Line::TooLong,
            None => Line::Partial {
                scanned: ring.len(),
            },
        }
    }
}

/// MCP1 frames: the codec, and the check of the frame at a ring's front.
pub mod mcp1 {
    pub use junction_proto::mcp1::*;

    use crate::buffer::RingBuffer;

    /// The id an error about the frame at the front of `ring` carries: the
    /// header's when the whole header is in with the right magic, else 0
    /// (proto/mcp1.md section 5). For errors that are about no complete frame:
    /// the frame timeout (-32004), a truncated frame (-32014).
    pub fn front_id(ring: &RingBuffer) -> u32 {
        let mut first = [0u8; HEADER_LEN];
        let seen = ring.len().min(HEADER_LEN);
        ring.peek(&mut first[..seen]);
        peek_header(&first[..seen]).map_or(0, |(id, _)| id)
    }

    /// Checks the frame at the front of `ring`.
    pub fn next_frame(ring: &RingBuffer, limit: usize) -> Next {
        let mut first = [0u8; HEADER_LEN];
        let seen = ring.len().min(HEADER_LEN);
        ring.peek(&mut first[..seen]);
        check(&first[..seen], ring.len(), limit)
    }
}
