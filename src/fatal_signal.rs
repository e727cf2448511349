//! Says why the process dies when the kernel kills it with SIGBUS.
//!
//! SQLite maps the database's `-shm` file (and may map the database) into memory. When such a
//! file is truncated, made immutable (`chattr +i`) or loses its storage under a running
//! process, the next access to the mapping raises SIGBUS, which ends the process without a
//! word. The handler writes one line to stderr (with only async-signal-safe calls: no
//! allocation, no locks, so it cannot take part in the log's JSON format) and lets the signal
//! take its default course. Nothing is lost: every answered write is in the WAL, and a restart
//! rebuilds the `-shm` index from it.

/// Installs the SIGBUS handler; `serve` calls it once at start-up.
pub fn report_sigbus() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: the handler only formats into a stack buffer and calls write(2), both
    // async-signal-safe; SA_RESETHAND restores the default action, so the signal, re-raised
    // when the faulting access runs again, ends the process as it would have.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn on_sigbus(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    let mut line = Line::default();
    line.push(b"ERROR refunds_gateway: fatal signal SIGBUS (code ");
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let (code, address) = unsafe {
        if info.is_null() {
            (0, 0)
        } else {
            (
                (*info).si_code as i64 as u64,
                (*info).si_addr() as usize as u64,
            )
        }
    };
    line.push_hex(code);
    line.push(b", address ");
    line.push_hex(address);
    line.push(
        b"): a memory-mapped file was truncated, made immutable or lost its storage; \
          most likely the database's -shm. The process stops; restart it (answered writes \
          are in the WAL, and the -shm is rebuilt from it)\n",
    );
    // SAFETY: write(2) is async-signal-safe; the buffer lives on this stack frame.
    unsafe {
        libc::write(2, line.bytes.as_ptr().cast(), line.length);
    }
}

/// A fixed buffer a signal handler can format into without allocating.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
struct Line {
    bytes: [u8; 512],
    length: usize,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
impl Default for Line {
    fn default() -> Line {
        Line {
            bytes: [0; 512],
            length: 0,
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
impl Line {
    fn push(&mut self, text: &[u8]) {
        let room = self.bytes.len() - self.length;
        let taken = text.len().min(room);
        self.bytes[self.length..self.length + taken].copy_from_slice(&text[..taken]);
        self.length += taken;
    }

    fn push_hex(&mut self, value: u64) {
        let mut digits = [0u8; 18];
        digits[0] = b'0';
        digits[1] = b'x';
        for (index, digit) in digits[2..].iter_mut().enumerate() {
            let nibble = (value >> (60 - 4 * index)) & 0xf;
            *digit = b"0123456789abcdef"[nibble as usize];
        }
        self.push(&digits);
    }
}
