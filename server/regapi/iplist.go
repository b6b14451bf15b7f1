package regapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/iplist"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

// ipListBodies are the two published forms of the signed list, encoded once.
type ipListBodies struct {
	version   string
	etag      string
	json, zip []byte
	zipName   string
}

func newIPListBodies(s iplist.Signed) (*ipListBodies, error) {
	js, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	var z bytes.Buffer
	if err := iplist.WriteZIP(&z, s); err != nil {
		return nil, err
	}
	v := s.List.Version()
	return &ipListBodies{version: v, etag: `"` + v + `"`, json: append(js, '\n'), zip: z.Bytes(), zipName: s.List.FileName()}, nil
}

// ipListURL is the published URL of the ZIP, "" without a list or an HTTPS URL.
func (h *Handler) ipListURL() string {
	if h.ipList == nil || h.cfg.HTTPSURL == "" {
		return ""
	}
	return strings.TrimRight(h.cfg.HTTPSURL, "/") + "/v1/iplist.zip"
}

// handleIPList serves GET /v1/iplist.json and GET /v1/iplist.zip. The bodies never change while
// the server runs; the ETag is the list's version, so caches revalidate (Cache-Control: no-cache)
// and get 304 until the list changes. Range and HEAD requests work as http.ServeContent makes them.
func (h *Handler) handleIPList(w http.ResponseWriter, r *http.Request) {
	b := h.ipList
	if b == nil {
		writeError(w, http.StatusNotFound, regtypes.CodeNoIPList,
			"This server publishes no IP address list: its operator has not configured one (iplist_file in chatd's config).")
		return
	}
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", b.etag)
	body, name := b.json, "iplist.json"
	if strings.HasSuffix(r.URL.Path, ".zip") {
		body, name = b.zip, b.zipName
		hdr.Set("Content-Type", "application/zip")
		hdr.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
	} else {
		hdr.Set("Content-Type", "application/json")
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(body))
}
