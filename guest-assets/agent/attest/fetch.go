package attest

import (
	"context"
	"errors"
	"net/http"
)

// Resource fetches and decrypts a KBS resource ("kbs:///repo/type/tag" or
// "repo/type/tag"). A 401 means the token or session went stale (or the
// resource policy said no): the client attests once more and asks again; a
// second 401 is a forbidden resource.
func (c *Client) Resource(ctx context.Context, uri string) ([]byte, error) {
	p, err := ParseResource(uri)
	if err != nil {
		return nil, err
	}
	return c.ResourcePath(ctx, p)
}

// ResourcePath is Resource for a parsed path.
func (c *Client) ResourcePath(ctx context.Context, p ResourcePath) ([]byte, error) {
	if c.cfg.Resource == nil {
		if c.cfg.NoResource != nil {
			return nil, c.cfg.NoResource
		}
		return nil, &ConfigError{File: CDHFile, Msg: "no KBS configured for resources", Err: ErrNoKBS}
	}
	var stale *session
	for attempt := 0; ; attempt++ {
		s, err := c.session(ctx, stale)
		if err != nil {
			return nil, err
		}
		data, err := c.get(ctx, s, p)
		var re *ResourceError
		if attempt == 0 && errors.As(err, &re) && re.Status == http.StatusUnauthorized {
			stale = s
			continue
		}
		return data, err
	}
}

// get is one resource request with the session's token, retried on
// transient failures.
func (c *Client) get(ctx context.Context, s *session, p ResourcePath) ([]byte, error) {
	url := c.cfg.Resource.URL + "/kbs/v0/resource/" + p.String()
	hdr := http.Header{"Authorization": {"Bearer " + s.token.raw}}
	// The cookie belongs to the KBS that set it; the bearer token alone
	// authorises a request to a different resource KBS (as CDH's cc_kbc
	// does), and Trustee falls back to the bearer when the cookie's session
	// has expired.
	if c.cfg.Resource.URL == c.cfg.Attest.URL {
		hdr.Set("Cookie", sessionCookie+"="+s.cookie)
	}
	x, err := retry(ctx, c.backoff, func() (*exchange, error) {
		x, err := send(ctx, c.resourceHTTP, http.MethodGet, url, nil, hdr, maxResourceBody)
		if err != nil {
			return nil, err
		}
		if x.status != http.StatusOK {
			return nil, serverError(x, resourceError(p, url, x))
		}
		return x, nil
	})
	if err != nil {
		return nil, err
	}
	data, err := s.key.decrypt(x.body)
	if err != nil {
		// go-jose's messages name the failing step, never key material.
		return nil, &BadResponseError{URL: url, Field: "JWE", Err: err}
	}
	return data, nil
}

func resourceError(p ResourcePath, url string, x *exchange) *ResourceError {
	e := &ResourceError{Resource: p.String(), URL: url, Status: x.status}
	if t, d, ok := parseKBSError(x.body); ok {
		e.Type, e.Detail = t, d
	} else {
		e.Body = clip(string(x.body), maxErrorText)
	}
	return e
}
