// PeregrineTLS: OpenSSL contexts (certificates, keys, session cache, reload)
// and the memory-BIO transform that turns ciphertext into plaintext and back.
// Imports: PeregrineIO (ByteBuffer), COpenSSL. Never touches: sockets, loops,
// SMTP; a connection in PeregrineTransport feeds it bytes.
