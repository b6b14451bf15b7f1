// Package pki holds the keys and certificates of a chatd deployment:
//
//   - the server's static X25519 key for the Noise layer ([StaticKey]), whose
//     public half clients pin ([FormatPublic], [ParseStaticPublic]);
//   - the operator's Ed25519 signing key ([LoadOrCreateOperatorKey]), which
//     signs business certificates and the IP address list;
//   - business certificates ([IssueBusinessCert], [VerifyBusinessCert]), by
//     which an operator vouches for a business phone number and its verified
//     display name;
//   - a development TLS CA and server certificate ([EnsureDevTLS]) for local
//     networks and tests.
//
// # File formats
//
// All private key files are written with mode 0600, atomically (a temporary
// file in the same directory, then a hard link or rename), and never
// overwritten by the LoadOrCreate functions: if a file exists it is loaded,
// and a malformed file is an error rather than a reason to replace it.
//
//   - Static key: one PEM block of type "CHATD X25519 PRIVATE KEY" whose
//     body is the 32 raw private key bytes. The public key is derived with
//     curve25519.X25519(priv, curve25519.Basepoint) and is not stored.
//   - Operator key: one PEM block of type "PRIVATE KEY" holding a PKCS#8
//     Ed25519 key (the format of `openssl genpkey -algorithm ed25519`).
//   - Dev TLS: PEM "CERTIFICATE" files and PKCS#8 "PRIVATE KEY" files.
//
// Public keys are shown and pinned as standard base64 (with padding) of the
// 32 key bytes.
package pki
