#ifndef PEREGRINE_COPENSSL_SHIM_H
#define PEREGRINE_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/bio.h>
#include <openssl/x509v3.h>

// OpenSSL exposes these as macros over *_ctrl(); Swift cannot import macros
// with arguments, so each gets a one-line inline function.

static inline int peregrine_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}
static inline int peregrine_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_max_proto_version(ctx, version);
}
static inline long peregrine_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_session_cache_mode(ctx, mode);
}
static inline long peregrine_SSL_CTX_sess_set_cache_size(SSL_CTX *ctx, long size) {
    return SSL_CTX_sess_set_cache_size(ctx, size);
}
static inline long peregrine_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}
static inline int peregrine_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}
static inline int peregrine_SSL_set_app_data(SSL *ssl, void *data) {
    return SSL_set_app_data(ssl, data);
}
static inline void *peregrine_SSL_get_app_data(const SSL *ssl) {
    return SSL_get_app_data(ssl);
}
static inline long peregrine_BIO_get_mem_data(BIO *bio, char **data) {
    return BIO_get_mem_data(bio, data);
}
static inline long peregrine_BIO_set_mem_eof_return(BIO *bio, long value) {
    return BIO_set_mem_eof_return(bio, value);
}
static inline size_t peregrine_BIO_pending(BIO *bio) {
    return BIO_ctrl_pending(bio);
}
static inline int peregrine_TLS1_2_VERSION(void) { return TLS1_2_VERSION; }
static inline int peregrine_TLS1_3_VERSION(void) { return TLS1_3_VERSION; }
// SSL_OP_* are built with SSL_OP_BIT(n), which Swift does not evaluate.
static inline uint64_t peregrine_SSL_OP_NO_RENEGOTIATION(void) { return SSL_OP_NO_RENEGOTIATION; }
static inline uint64_t peregrine_SSL_OP_NO_COMPRESSION(void) { return SSL_OP_NO_COMPRESSION; }
static inline uint64_t peregrine_SSL_OP_CIPHER_SERVER_PREFERENCE(void) { return SSL_OP_CIPHER_SERVER_PREFERENCE; }
#endif
