package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// writeFileAtomic writes data to path with perm: it writes a temporary file in
// the same directory, syncs it, and moves it into place, so that a reader
// never sees a partial file. With exclusive set it fails with an error
// wrapping fs.ErrExist instead of replacing an existing path (a concurrent
// creator wins).
func writeFileAtomic(path string, data []byte, perm os.FileMode, exclusive bool) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory for %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
		}
		_ = os.Remove(tmp) // after a link the temp name is an extra link; after a rename it is gone
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if !exclusive {
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	}
	// os.Link fails if path exists, which makes creation exclusive.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write %s: %w", path, fs.ErrExist)
		}
		// The file system may not support hard links; fall back to a
		// rename after checking that nothing is there.
		if _, statErr := os.Lstat(path); statErr == nil {
			return fmt.Errorf("write %s: %w", path, fs.ErrExist)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// loadOrCreate reads path and decodes it with load. When path does not
// exist it calls create, writes the result exclusively with mode 0600 and
// reports created. If another process created the file first, that file is
// loaded instead.
func loadOrCreate[T any](path string, load func([]byte) (T, error), create func() (T, []byte, error)) (T, bool, error) {
	var zero T
	for range 2 {
		data, err := os.ReadFile(path)
		if err == nil {
			v, err := load(data)
			if err != nil {
				return zero, false, fmt.Errorf("%s: %w", path, err)
			}
			return v, false, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return zero, false, fmt.Errorf("read key: %w", err)
		}
		v, encoded, err := create()
		if err != nil {
			return zero, false, err
		}
		err = writeFileAtomic(path, encoded, 0o600, true)
		if err == nil {
			return v, true, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return zero, false, err
		}
		// Lost a race with another creator: load its key.
	}
	return zero, false, fmt.Errorf("create %s: file appeared and vanished concurrently", path)
}
