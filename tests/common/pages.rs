//! Test support: SQLCipher 4 pages decrypted with the raw key, so a scan sees what the file
//! would give up to anyone holding the key: live rows, free pages and stale WAL frames alike.
//!
//! Layout (SQLCipher 4 defaults): 4096-byte pages, each AES-256-CBC encrypted up to its last
//! 80 bytes, which hold the IV (16) and the HMAC (64). Page 1 starts with the 16-byte file salt
//! in the clear. With a raw key the AES key is the key itself.

use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};

const PAGE: usize = 4096;
const RESERVE: usize = 80;
const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

type Decryptor = cbc::Decryptor<aes::Aes256>;

fn decrypt_page(page: &[u8], first: bool, key: &[u8; 32]) -> Vec<u8> {
    let start = if first { 16 } else { 0 };
    let iv = &page[PAGE - RESERVE..PAGE - RESERVE + 16];
    let mut data = page[start..PAGE - RESERVE].to_vec();
    Decryptor::new(key.into(), iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut data)
        .expect("whole blocks");
    data
}

/// The plaintext of every page of a database file.
pub(crate) fn database_plaintext(file: &[u8], key: &[u8; 32]) -> Vec<u8> {
    file.chunks_exact(PAGE)
        .enumerate()
        .flat_map(|(index, page)| decrypt_page(page, index == 0, key))
        .collect()
}

/// The plaintext of every page image in a WAL file, stale frames included.
pub(crate) fn wal_plaintext(file: &[u8], key: &[u8; 32]) -> Vec<u8> {
    if file.len() < WAL_HEADER {
        return Vec::new();
    }
    file[WAL_HEADER..]
        .chunks_exact(FRAME_HEADER + PAGE)
        .flat_map(|frame| {
            let page_number = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            decrypt_page(&frame[FRAME_HEADER..], page_number == 1, key)
        })
        .collect()
}

/// Reads a key file's 64 hex characters.
pub(crate) fn raw_key(key_file: &std::path::Path) -> [u8; 32] {
    let text = std::fs::read_to_string(key_file).expect("key file");
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).expect("hex key");
    key
}
