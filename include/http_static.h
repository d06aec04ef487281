/*
 * http_static — files served as they are: the dashboard (web/) and the
 * OpenAPI document, and where they are found.
 *
 * The share directory: the directory holding openapi.yaml and web/ — the
 * first of <dir of the binary>/.. and <dir of the binary>/../.. that holds
 * openapi.yaml (running build/pop3bridge or build/<variant>/pop3bridge in the
 * source tree), else <dir of the binary>/../share/pop3bridge (make install's
 * layout).  api.web_dir, when set, replaces <share>/web.
 *
 * Static files: GET / serves index.html; other files only with a
 * whitelisted extension (html css js mjs json map svg png jpg jpeg gif ico
 * webp woff woff2 txt webmanifest), every segment of [A-Za-z0-9._-] not
 * starting with ".", at most HTTP_STATIC_DEPTH segments, no symbolic link
 * leaving the directory, regular files of at most HTTP_STATIC_FILE_MAX
 * bytes.  Anything else is 404.  Responses: Cache-Control: no-cache.
 */
#ifndef POP3BRIDGE_HTTP_STATIC_H
#define POP3BRIDGE_HTTP_STATIC_H

#include <stddef.h>

#include "http.h"

#define HTTP_STATIC_FILE_MAX (32u << 20) /* largest file served */
#define HTTP_STATIC_DEPTH 8              /* path segments of a static file */
#define HTTP_PATH_MAX 4096               /* file system paths */

/* The share directory (see above), resolved; 0, or -1 when none holds
 * openapi.yaml. */
int http_static_share_dir(char *out, size_t size);

/* Content type for a file name by its extension; NULL when the extension is
 * not on the whitelist. */
const char *http_static_type(const char *name);

/* Answer with the file at path (200, or 404 when it is not a regular file). */
void http_static_file(struct http_req *r, const char *path, const char *ctype);

/* Answer a GET of the request's path from web_dir (a real path; "" when
 * there is none): the file, or 404. */
void http_static_serve(struct http_req *r, const char *web_dir);

#endif
