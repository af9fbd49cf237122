//! Opening a record's ciphertext as it streams from IPFS (`crypto::Opener`), in uneven pieces.
//! Byte 4 picks the piece size and the padding scheme; byte 5 the mode:
//! - even: a claimed payload size (the first 4 bytes, up to 4 MiB) and any ciphertext, which
//!   never authenticates: the framing and length checks;
//! - odd: a real envelope of a payload of that size sealed under the same key, up to 4 KiB
//!   (one segment), or up to 200 KB (past three 64 KiB segments) when bit 3 of the mode is
//!   set: a large one costs milliseconds under AddressSanitizer, a small one microseconds;
//!   with one bit flipped where bytes 6 to 9 say when bit 1 of the mode is set, and cut short
//!   when bit 2 is: past authentication, the in-place opening must give back exactly the
//!   payload when nothing was changed, and must fail otherwise.
#![no_main]
use ehr_share::crypto::{AeadKey, Opener, Scheme, seal_segments};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let claimed = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let piece = usize::from(data[4] >> 1).max(1);
    let scheme = if data[4] & 1 == 0 {
        Scheme::PowerOfTwo
    } else {
        Scheme::Padme
    };
    let mode = data[5];
    let key = AeadKey::from_slice(&[9u8; 32]).unwrap();
    if mode & 1 == 0 {
        let mut o = Opener::new(&key, scheme, claimed % (4 << 20));
        for chunk in data[6..].chunks(piece) {
            if o.push(chunk).is_err() {
                return;
            }
        }
        let _ = o.finish();
        return;
    }
    let len = claimed % if mode & 8 != 0 { 200_000 } else { 4096 };
    let payload: Vec<u8> = (0..len).map(|i| (i as u8) ^ data[6]).collect();
    let mut sealed = Vec::new();
    seal_segments(&key, scheme, &payload, |s| sealed.extend_from_slice(&s));
    let flip = mode & 2 != 0;
    let cut = mode & 4 != 0;
    if flip {
        let at = u32::from_le_bytes([data[6], data[7], data[8], data[9]]) as usize;
        let i = at % sealed.len();
        sealed[i] ^= 1 << (at % 8);
    }
    if cut {
        let keep = usize::from(data[7]) % sealed.len();
        sealed.truncate(keep);
    }
    let mut o = Opener::new(&key, scheme, len);
    let pushed = sealed.chunks(piece).try_for_each(|c| o.push(c));
    let opened = pushed.and_then(|()| o.finish());
    match opened {
        Ok(plain) => {
            assert!(!flip && !cut, "a changed or cut envelope opened");
            assert!(plain == payload, "the opened payload differs");
        }
        Err(e) => assert!(flip || cut, "an intact envelope failed to open: {e}"),
    }
});
