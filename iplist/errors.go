package iplist

import "errors"

// The errors of verification ([ParseZIP], [ParseJSON]) and of the operator's list file ([ParseFile],
// [LoadFile]). Every error this package returns wraps at most one of them, with a sentence saying
// what exactly is wrong (which file, which line, which date).
var (
	// ErrMalformed: the input is not a list in this format. For the signed forms: not a ZIP or not a
	// JSON object, an unknown or duplicated file or field, a line that is not a CIDR range, a range
	// with host bits set or in the wrong family, ranges out of order, dates that are not YYYY-MM-DD
	// or contradict each other. A signed list that is malformed was signed that way: its signature
	// was checked first.
	ErrMalformed = errors.New("iplist: malformed IP address list")

	// ErrMissingFile: the ZIP lacks one of META.txt, ipv4.txt, ipv6.txt and SIGNATURE.
	ErrMissingFile = errors.New("iplist: file missing from the IP address list ZIP")

	// ErrTooLarge: the ZIP or JSON is larger than [MaxSize], a file in the ZIP is (or unpacks to)
	// more than its limit, or a family has more than [MaxRanges] ranges. Nothing larger than the
	// limits is read into memory.
	ErrTooLarge = errors.New("iplist: IP address list too large")

	// ErrSignature: the signature is missing, not 64 bytes of base64, or does not verify with the
	// operator key: the list was altered after it was signed.
	ErrSignature = errors.New("iplist: IP address list signature is missing or not valid (the list was altered)")

	// ErrWrongKey: the list names another operator key than the one it is verified with: it was
	// signed by another server's operator, or the operator key changed since the client pinned it.
	ErrWrongKey = errors.New("iplist: IP address list is signed by another operator key")

	// ErrExpired: the list's signature is good but now is on or after its expiry date.
	ErrExpired = errors.New("iplist: IP address list has expired")
)
