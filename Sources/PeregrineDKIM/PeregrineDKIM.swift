// PeregrineDKIM: DKIM (RFC 6376) signing and verification, rsa-sha256 and
// ed25519-sha256 (RFC 8463), over bytes: header and body canonicalisation
// (simple, relaxed), a streaming body hash, the DKIM-Signature field, and a
// DNS-free verifier (the caller supplies the public key).
// Imports: PeregrineIO (nothing yet but the module contract), COpenSSL (EVP).
// Never touches: sockets, loops, files other than a key file read at config
// load, DNS. The daemon signs with it at injection; the sink verifies with it.
