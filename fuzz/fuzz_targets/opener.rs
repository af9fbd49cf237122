//! Opening a record's ciphertext as it streams from IPFS (`crypto::Opener`): a claimed payload
//! size (from the first 4 bytes, up to 4 MiB), a padding scheme and any ciphertext, pushed in uneven pieces.
#![no_main]
use ehr_share::crypto::{AeadKey, Opener, Scheme};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let len = (u32::from_le_bytes([data[0], data[1], data[2], data[3]]) % (4 << 20)) as usize;
    let piece = usize::from(data[4] >> 1).max(1);
    let scheme = if data[4] & 1 == 0 {
        Scheme::PowerOfTwo
    } else {
        Scheme::Padme
    };
    let key = AeadKey::from_slice(&[9u8; 32]).unwrap();
    let mut o = Opener::new(&key, scheme, len);
    for chunk in data[5..].chunks(piece) {
        if o.push(chunk).is_err() {
            return;
        }
    }
    let _ = o.finish();
});
