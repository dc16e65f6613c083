#include "ossl.h"

#ifndef RATHOLE_OSSL_DLOPEN

/* OpenSSL is linked (STATIC=1, OSSL_DLOPEN=0). */
int ossl_load(char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	return 0;
}

#else

#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Our definitions below stand in for OpenSSL's: hidden, so that they never
 * enter the dynamic symbol table where the libraries' own calls would find
 * them instead of each other. */
#pragma GCC visibility push(hidden)
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/opensslv.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/stack.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#ifndef RATHOLE_NO_TLS
#include <openssl/ssl.h>
#endif

/* Every OpenSSL function rathole calls: F(return type, name, parameters,
 * arguments), V for those returning nothing. The headers above declare each
 * one, so a parameter list that differs from OpenSSL's does not compile; a
 * function missing here fails the link. */
#define LIBCRYPTO_FUNCTIONS(F, V) \
	F(int, ASN1_TIME_print, (BIO *bp, const ASN1_TIME *tm), (bp, tm)) \
	V(BIO_clear_flags, (BIO *b, int flags), (b, flags)) \
	F(int, BIO_free, (BIO *a), (a)) \
	F(void *, BIO_get_data, (BIO *a), (a)) \
	F(int, BIO_get_new_index, (void), ()) \
	V(BIO_meth_free, (BIO_METHOD *biom), (biom)) \
	F(BIO_METHOD *, BIO_meth_new, (int type, const char *name), (type, name)) \
	F(int, BIO_meth_set_ctrl, (BIO_METHOD *biom, long (*ctrl)(BIO *, int, long, void *)), \
	  (biom, ctrl)) \
	F(int, BIO_meth_set_write, (BIO_METHOD *biom, int (*write)(BIO *, const char *, int)), \
	  (biom, write)) \
	F(BIO *, BIO_new, (const BIO_METHOD *type), (type)) \
	F(BIO *, BIO_new_socket, (int sock, int close_flag), (sock, close_flag)) \
	F(int, BIO_read, (BIO *b, void *data, int dlen), (b, data, dlen)) \
	F(const BIO_METHOD *, BIO_s_mem, (void), ()) \
	V(BIO_set_data, (BIO *a, void *ptr), (a, ptr)) \
	V(BIO_set_flags, (BIO *b, int flags), (b, flags)) \
	V(BIO_set_init, (BIO *a, int init), (a, init)) \
	V(ERR_clear_error, (void), ()) \
	F(unsigned long, ERR_get_error, (void), ()) \
	F(unsigned long, ERR_peek_last_error, (void), ()) \
	F(const char *, ERR_reason_error_string, (unsigned long e), (e)) \
	F(int, EVP_CIPHER_CTX_ctrl, (EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr), \
	  (ctx, type, arg, ptr)) \
	V(EVP_CIPHER_CTX_free, (EVP_CIPHER_CTX *c), (c)) \
	F(EVP_CIPHER_CTX *, EVP_CIPHER_CTX_new, (void), ()) \
	F(int, EVP_CipherFinal_ex, (EVP_CIPHER_CTX *ctx, unsigned char *outm, int *outl), \
	  (ctx, outm, outl)) \
	F(int, EVP_CipherInit_ex, (EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl, \
				   const unsigned char *key, const unsigned char *iv, int enc), \
	  (ctx, cipher, impl, key, iv, enc)) \
	F(int, EVP_CipherUpdate, (EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl, \
				  const unsigned char *in, int inl), (ctx, out, outl, in, inl)) \
	F(int, EVP_Digest, (const void *data, size_t count, unsigned char *md, unsigned int *size, \
			    const EVP_MD *type, ENGINE *impl), (data, count, md, size, type, impl)) \
	F(int, EVP_DigestFinal_ex, (EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s), \
	  (ctx, md, s)) \
	F(int, EVP_DigestInit_ex, (EVP_MD_CTX *ctx, const EVP_MD *type, ENGINE *impl), \
	  (ctx, type, impl)) \
	F(int, EVP_DigestUpdate, (EVP_MD_CTX *ctx, const void *d, size_t cnt), (ctx, d, cnt)) \
	V(EVP_MD_CTX_free, (EVP_MD_CTX *ctx), (ctx)) \
	F(EVP_MD_CTX *, EVP_MD_CTX_new, (void), ()) \
	V(EVP_PKEY_CTX_free, (EVP_PKEY_CTX *ctx), (ctx)) \
	F(EVP_PKEY_CTX *, EVP_PKEY_CTX_new, (EVP_PKEY *pkey, ENGINE *e), (pkey, e)) \
	F(EVP_PKEY_CTX *, EVP_PKEY_CTX_new_from_name, (OSSL_LIB_CTX *libctx, const char *name, \
						       const char *propquery), \
	  (libctx, name, propquery)) \
	V(EVP_CIPHER_free, (EVP_CIPHER *cipher), (cipher)) \
	V(EVP_KDF_free, (EVP_KDF *kdf), (kdf)) \
	F(EVP_KDF *, EVP_KDF_fetch, (OSSL_LIB_CTX *libctx, const char *algorithm, \
				     const char *properties), (libctx, algorithm, properties)) \
	V(EVP_MD_free, (EVP_MD *md), (md)) \
	F(EVP_CIPHER *, EVP_CIPHER_fetch, (OSSL_LIB_CTX *ctx, const char *algorithm, \
					   const char *properties), (ctx, algorithm, properties)) \
	F(EVP_MD *, EVP_MD_fetch, (OSSL_LIB_CTX *ctx, const char *algorithm, \
				   const char *properties), (ctx, algorithm, properties)) \
	F(int, EVP_PKEY_keygen_init, (EVP_PKEY_CTX *ctx), (ctx)) \
	F(int, EVP_PKEY_generate, (EVP_PKEY_CTX *ctx, EVP_PKEY **ppkey), (ctx, ppkey)) \
	F(int, EVP_PKEY_derive, (EVP_PKEY_CTX *ctx, unsigned char *key, size_t *keylen), \
	  (ctx, key, keylen)) \
	F(int, EVP_PKEY_derive_init, (EVP_PKEY_CTX *ctx), (ctx)) \
	F(int, EVP_PKEY_derive_set_peer, (EVP_PKEY_CTX *ctx, EVP_PKEY *peer), (ctx, peer)) \
	V(EVP_PKEY_free, (EVP_PKEY *pkey), (pkey)) \
	F(int, EVP_PKEY_up_ref, (EVP_PKEY *pkey), (pkey)) \
	F(int, EVP_PKEY_get_raw_public_key, (const EVP_PKEY *pkey, unsigned char *pub, size_t *len), \
	  (pkey, pub, len)) \
	F(EVP_PKEY *, EVP_PKEY_new_raw_private_key, (int type, ENGINE *e, const unsigned char *priv, \
						     size_t len), (type, e, priv, len)) \
	F(EVP_PKEY *, EVP_PKEY_new_raw_public_key, (int type, ENGINE *e, const unsigned char *pub, \
						    size_t len), (type, e, pub, len)) \
	F(const EVP_MD *, EVP_sha1, (void), ()) \
	F(int, OPENSSL_sk_num, (const OPENSSL_STACK *st), (st)) \
	V(OPENSSL_sk_pop_free, (OPENSSL_STACK *st, void (*func)(void *)), (st, func)) \
	F(void *, OPENSSL_sk_value, (const OPENSSL_STACK *st, int i), (st, i)) \
	F(OSSL_PROVIDER *, OSSL_PROVIDER_load, (OSSL_LIB_CTX *libctx, const char *name), \
	  (libctx, name)) \
	V(PKCS12_free, (PKCS12 *a), (a)) \
	F(int, PKCS12_mac_present, (const PKCS12 *p12), (p12)) \
	F(int, PKCS12_parse, (PKCS12 *p12, const char *pass, EVP_PKEY **pkey, X509 **cert, \
			      STACK_OF(X509) **ca), (p12, pass, pkey, cert, ca)) \
	F(int, PKCS12_verify_mac, (PKCS12 *p12, const char *pass, int passlen), \
	  (p12, pass, passlen)) \
	F(int, RAND_bytes, (unsigned char *buf, int num), (buf, num)) \
	F(int, RAND_priv_bytes, (unsigned char *buf, int num), (buf, num)) \
	F(int, X509_VERIFY_PARAM_set1_ip_asc, (X509_VERIFY_PARAM *param, const char *ipasc), \
	  (param, ipasc)) \
	F(int, X509_cmp_current_time, (const ASN1_TIME *s), (s)) \
	V(X509_free, (X509 *a), (a)) \
	F(const ASN1_TIME *, X509_get0_notAfter, (const X509 *x), (x)) \
	F(const ASN1_TIME *, X509_get0_notBefore, (const X509 *x), (x)) \
	F(const char *, X509_verify_cert_error_string, (long n), (n)) \
	F(PKCS12 *, d2i_PKCS12, (PKCS12 **a, const unsigned char **in, long len), (a, in, len)) \
	TLS13_CRYPTO_FUNCTIONS(F, V)

/* Keying our TLS 1.3 records (tls13.c). */
#ifdef RATHOLE_NO_TLS
#define TLS13_CRYPTO_FUNCTIONS(F, V)
#else
#define TLS13_CRYPTO_FUNCTIONS(F, V) \
	V(EVP_KDF_CTX_free, (EVP_KDF_CTX *ctx), (ctx)) \
	F(EVP_KDF_CTX *, EVP_KDF_CTX_new, (EVP_KDF *kdf), (kdf)) \
	F(int, EVP_KDF_derive, (EVP_KDF_CTX *ctx, unsigned char *key, size_t keylen, \
				const OSSL_PARAM params[]), (ctx, key, keylen, params)) \
	F(OSSL_PARAM, OSSL_PARAM_construct_end, (void), ()) \
	F(OSSL_PARAM, OSSL_PARAM_construct_int, (const char *key, int *buf), (key, buf)) \
	F(OSSL_PARAM, OSSL_PARAM_construct_octet_string, (const char *key, void *buf, \
							  size_t bsize), (key, buf, bsize)) \
	F(OSSL_PARAM, OSSL_PARAM_construct_utf8_string, (const char *key, char *buf, \
							 size_t bsize), (key, buf, bsize))
#endif

#ifdef RATHOLE_NO_TLS
#define LIBSSL_FUNCTIONS(F, V)
#else
#define LIBSSL_FUNCTIONS(F, V) \
	F(const char *, SSL_CIPHER_get_name, (const SSL_CIPHER *c), (c)) \
	F(uint16_t, SSL_CIPHER_get_protocol_id, (const SSL_CIPHER *c), (c)) \
	F(int, SSL_CTX_check_private_key, (const SSL_CTX *ctx), (ctx)) \
	F(long, SSL_CTX_ctrl, (SSL_CTX *ctx, int cmd, long larg, void *parg), (ctx, cmd, larg, parg)) \
	V(SSL_CTX_set_keylog_callback, (SSL_CTX *ctx, SSL_CTX_keylog_cb_func cb), (ctx, cb)) \
	F(int, SSL_CTX_set_ciphersuites, (SSL_CTX *ctx, const char *str), (ctx, str)) \
	V(SSL_CTX_free, (SSL_CTX *ctx), (ctx)) \
	F(int, SSL_CTX_load_verify_locations, (SSL_CTX *ctx, const char *CAfile, const char *CApath), \
	  (ctx, CAfile, CApath)) \
	F(SSL_CTX *, SSL_CTX_new, (const SSL_METHOD *meth), (meth)) \
	V(SSL_CTX_set_default_read_buffer_len, (SSL_CTX *ctx, size_t len), (ctx, len)) \
	F(int, SSL_CTX_set_default_verify_paths, (SSL_CTX *ctx), (ctx)) \
	F(int, SSL_CTX_set_num_tickets, (SSL_CTX *ctx, size_t num_tickets), (ctx, num_tickets)) \
	V(SSL_CTX_sess_set_new_cb, (SSL_CTX *ctx, int (*new_session_cb)(SSL *, SSL_SESSION *)), \
	  (ctx, new_session_cb)) \
	F(SSL_SESSION *, SSL_SESSION_dup, (const SSL_SESSION *src), (src)) \
	V(SSL_SESSION_free, (SSL_SESSION *ses), (ses)) \
	F(int, SSL_SESSION_is_resumable, (const SSL_SESSION *s), (s)) \
	F(uint64_t, SSL_CTX_set_options, (SSL_CTX *ctx, uint64_t op), (ctx, op)) \
	V(SSL_CTX_set_verify, (SSL_CTX *ctx, int mode, SSL_verify_cb callback), (ctx, mode, callback)) \
	F(int, SSL_CTX_use_PrivateKey, (SSL_CTX *ctx, EVP_PKEY *pkey), (ctx, pkey)) \
	F(int, SSL_CTX_use_certificate, (SSL_CTX *ctx, X509 *x), (ctx, x)) \
	F(long, SSL_ctrl, (SSL *ssl, int cmd, long larg, void *parg), (ssl, cmd, larg, parg)) \
	F(int, SSL_do_handshake, (SSL *s), (s)) \
	V(SSL_free, (SSL *ssl), (ssl)) \
	F(int, SSL_has_pending, (const SSL *s), (s)) \
	F(int, SSL_in_init, (const SSL *s), (s)) \
	F(X509_VERIFY_PARAM *, SSL_get0_param, (SSL *ssl), (ssl)) \
	F(void *, SSL_get_ex_data, (const SSL *ssl, int idx), (ssl, idx)) \
	F(const SSL_CIPHER *, SSL_get_current_cipher, (const SSL *s), (s)) \
	F(int, SSL_get_error, (const SSL *s, int ret_code), (s, ret_code)) \
	F(int, SSL_get_shutdown, (const SSL *ssl), (ssl)) \
	F(long, SSL_get_verify_result, (const SSL *ssl), (ssl)) \
	F(const char *, SSL_get_version, (const SSL *s), (s)) \
	F(int, SSL_version, (const SSL *ssl), (ssl)) \
	F(SSL *, SSL_new, (SSL_CTX *ctx), (ctx)) \
	F(int, SSL_read_ex, (SSL *ssl, void *buf, size_t num, size_t *readbytes), \
	  (ssl, buf, num, readbytes)) \
	F(int, SSL_set1_host, (SSL *s, const char *hostname), (s, hostname)) \
	V(SSL_set_bio, (SSL *s, BIO *rbio, BIO *wbio), (s, rbio, wbio)) \
	V(SSL_set_accept_state, (SSL *s), (s)) \
	V(SSL_set_connect_state, (SSL *s), (s)) \
	F(int, SSL_set_ex_data, (SSL *ssl, int idx, void *data), (ssl, idx, data)) \
	V(SSL_set_msg_callback, (SSL *ssl, void (*cb)(int write_p, int version, int content_type, \
						    const void *buf, size_t len, SSL *ssl, \
						    void *arg)), (ssl, cb)) \
	F(int, SSL_set_session, (SSL *to, SSL_SESSION *session), (to, session)) \
	F(int, SSL_session_reused, (const SSL *s), (s)) \
	V(SSL_set_read_ahead, (SSL *s, int yes), (s, yes)) \
	V(SSL_set_hostflags, (SSL *s, unsigned int flags), (s, flags)) \
	F(int, SSL_shutdown, (SSL *s), (s)) \
	F(int, SSL_write_ex, (SSL *s, const void *buf, size_t num, size_t *written), \
	  (s, buf, num, written)) \
	F(const SSL_METHOD *, TLS_client_method, (void), ()) \
	F(const SSL_METHOD *, TLS_server_method, (void), ())
#endif

#define ALL_FUNCTIONS(F, V) LIBCRYPTO_FUNCTIONS(F, V) LIBSSL_FUNCTIONS(F, V)

/* The addresses dlsym() found, one per function. */
#define POINTER(ret, name, params, args) ret (*name) params;
#define VOID_POINTER(name, params, args) void (*name) params;
static struct {
	ALL_FUNCTIONS(POINTER, VOID_POINTER)
} fn;

static bool loaded;

#define STR_(x) #x
#define STR(x) STR_(x)
#define LIBCRYPTO_SONAME "libcrypto.so." STR(OPENSSL_SHLIB_VERSION)
#define LIBSSL_SONAME "libssl.so." STR(OPENSSL_SHLIB_VERSION)

_Static_assert(sizeof(void *) == sizeof(void (*)(void)),
	       "dlsym() results are stored as function pointers");

/* The functions' names, in the order of fn's members, one string after the
 * other: a table without a relocation per entry. */
#define NAME(ret, name, params, args) #name "\0"
#define VOID_NAME(name, params, args) #name "\0"
static const char names[] = ALL_FUNCTIONS(NAME, VOID_NAME);
#define ONE(...) + 1
enum {
	N_LIBCRYPTO = 0 LIBCRYPTO_FUNCTIONS(ONE, ONE),
	N_ALL = N_LIBCRYPTO LIBSSL_FUNCTIONS(ONE, ONE)
};
_Static_assert(sizeof fn == N_ALL * sizeof(void *), "fn is an array of N_ALL pointers");

static void *open_library(const char *soname, char *err, size_t errlen)
{
	void *lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);

	if (!lib)
		snprintf(err, errlen, "cannot load OpenSSL: %s", dlerror());
	return lib;
}

int ossl_load(char *err, size_t errlen)
{
	void *crypto, *ssl = NULL;

	if (loaded)
		return 0;
	/* Once opened, the libraries stay for the life of the process (a
	 * second attempt after a failure finds them mapped already). */
	crypto = open_library(LIBCRYPTO_SONAME, err, errlen);
	if (!crypto)
		return -1;
#ifndef RATHOLE_NO_TLS
	ssl = open_library(LIBSSL_SONAME, err, errlen);
	if (!ssl)
		return -1;
#endif
	const char *name = names;
	for (size_t i = 0; i < N_ALL; i++, name += strlen(name) + 1) {
		bool in_libssl = i >= N_LIBCRYPTO;
		void *addr = dlsym(in_libssl ? ssl : crypto, name);

		if (!addr) {
			snprintf(err, errlen, "cannot load OpenSSL: %s has no %s (OpenSSL %s "
				 "or a later 3.x is needed)", in_libssl ? LIBSSL_SONAME :
				 LIBCRYPTO_SONAME, name, OPENSSL_VERSION_STR);
			return -1;
		}
		memcpy((char *)&fn + i * sizeof addr, &addr, sizeof addr);
	}
	loaded = true;
	return 0;
}

/* A call before ossl_load() is a bug of ours (every path that needs OpenSSL
 * loads it first, and says so when it cannot): stop with its name rather
 * than jump to a null address. */
__attribute__((noreturn, cold)) static void not_loaded(const char *name)
{
	fprintf(stderr, "rathole: %s called before OpenSSL was loaded (ossl_load)\n", name);
	abort();
}

#define WRAPPER(ret, name, params, args) \
	ret name params \
	{ \
		if (__builtin_expect(!loaded, 0)) \
			not_loaded(#name); \
		return fn.name args; \
	}
#define VOID_WRAPPER(name, params, args) \
	void name params \
	{ \
		if (__builtin_expect(!loaded, 0)) \
			not_loaded(#name); \
		fn.name args; \
	}
ALL_FUNCTIONS(WRAPPER, VOID_WRAPPER)
#pragma GCC visibility pop

#endif
