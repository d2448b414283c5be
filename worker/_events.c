/* Anomaly events of a scored batch, written as JSON documents in C.
 *
 * Why C: with half the beats flagged, building the events in Python (a dict per event,
 * its UUIDv5 id through hashlib, orjson) was a third of the worker's loop thread and most
 * of the gap between the worker and a bare consume -> produce passthrough (README,
 * "Performance"). What is per batch (which rows, scores, error windows, severities, the
 * floats' text) is still computed by worker/events.py with numpy and orjson; this module
 * walks the chosen beats and writes each event: the fields and values of the contract
 * (schemas/anomaly_event.schema.json), checked against a plain-Python reference in
 * tests/test_worker_native_events.py.
 *
 * Only the CPython C API is used (no numpy headers): int arrays arrive through the buffer
 * protocol.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- a growable byte buffer ------------------------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra) cap *= 2;
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define PUT_LIT(b, lit) buf_put((b), (lit), (Py_ssize_t)(sizeof(lit) - 1))

/* Decimal digits of v at out (no terminator); returns how many (printf's parsing cost more than the rest). */
static int write_int(char *out, long long v) {
    char tmp[24];
    int n = 0, len = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) out[len++] = '-';
    while (n) out[len++] = tmp[--n];
    return len;
}

static int put_int(Buf *b, long long v) {
    if (buf_reserve(b, 24) < 0) return -1;
    b->len += write_int(b->data + b->len, v);
    return 0;
}

/* Two digits of v (0..99) at out. */
static void write_2(char *out, long long v) {
    out[0] = (char)('0' + v / 10);
    out[1] = (char)('0' + v % 10);
}

/* A JSON string from UTF-8 bytes: quotes, backslashes and control characters escaped. */
static int put_utf8_string(Buf *b, const char *s, Py_ssize_t n) {
    static const char hex[] = "0123456789abcdef";
    if (buf_reserve(b, n * 6 + 2) < 0) return -1;
    char *out = b->data + b->len;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *out++ = '\\';
            *out++ = (char)c;
        } else if (c < 0x20) {
            switch (c) {
            case '\n': *out++ = '\\'; *out++ = 'n'; break;
            case '\r': *out++ = '\\'; *out++ = 'r'; break;
            case '\t': *out++ = '\\'; *out++ = 't'; break;
            case '\b': *out++ = '\\'; *out++ = 'b'; break;
            case '\f': *out++ = '\\'; *out++ = 'f'; break;
            default:
                memcpy(out, "\\u00", 4);
                out += 4;
                *out++ = hex[c >> 4];
                *out++ = hex[c & 15];
            }
        } else {
            *out++ = (char)c;
        }
    }
    *out++ = '"';
    b->len = out - b->data;
    return 0;
}

static int put_string(Buf *b, PyObject *s, const char *what) {
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", what, Py_TYPE(s)->tp_name);
        return -1;
    }
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &n);
    if (utf8 == NULL) return -1;
    return put_utf8_string(b, utf8, n);
}

/* ---- ISO-8601 times ---------------------------------------------------------------- */

#define MAX_TIME_MS 253402300799999LL /* 9999-12-31T23:59:59.999Z, as schemas.messages */

/* Epoch ms -> "YYYY-MM-DDTHH:MM:SS.mmmZ" (proleptic Gregorian, UTC), with the quotes. */
static int put_iso_time(Buf *b, long long ms) {
    if (ms < 0 || ms > MAX_TIME_MS) {
        PyErr_Format(PyExc_ValueError, "time %lld ms is outside 0..%lld", ms, MAX_TIME_MS);
        return -1;
    }
    long long seconds = ms / 1000, days = seconds / 86400, rest = seconds % 86400;
    /* days since 1970-01-01 -> civil date (the era arithmetic of H. Hinnant's days_from_civil) */
    long long z = days + 719468, era = z / 146097, doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    long long day = doy - (153 * mp + 2) / 5 + 1, month = mp < 10 ? mp + 3 : mp - 9;
    long long year = yoe + era * 400 + (month <= 2);
    if (buf_reserve(b, 26) < 0) return -1;
    char *out = b->data + b->len; /* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
    out[0] = '"';
    write_2(out + 1, year / 100);
    write_2(out + 3, year % 100);
    out[5] = '-';
    write_2(out + 6, month);
    out[8] = '-';
    write_2(out + 9, day);
    out[11] = 'T';
    write_2(out + 12, rest / 3600);
    out[14] = ':';
    write_2(out + 15, rest / 60 % 60);
    out[17] = ':';
    write_2(out + 18, rest % 60);
    out[20] = '.';
    out[21] = (char)('0' + ms % 1000 / 100);
    write_2(out + 22, ms % 100);
    out[24] = 'Z';
    out[25] = '"';
    b->len += 26;
    return 0;
}

/* ---- SHA-1 and UUIDv5 (RFC 4122 section 4.3) -------------------------------------- */

typedef struct {
    uint32_t h[5];
    uint64_t bytes;
    unsigned char block[64];
    size_t used;
} Sha1;

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(Sha1 *s, const unsigned char *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
}

static void sha1_init(Sha1 *s) {
    static const uint32_t h0[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    memcpy(s->h, h0, sizeof h0);
    s->bytes = 0;
    s->used = 0;
}

static void sha1_update(Sha1 *s, const unsigned char *p, size_t n) {
    s->bytes += n;
    while (n > 0) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->block + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used == 64) {
            sha1_block(s, s->block);
            s->used = 0;
        }
    }
}

static void sha1_final(Sha1 *s, unsigned char out[20]) {
    uint64_t bits = s->bytes * 8;
    s->block[s->used++] = 0x80;
    if (s->used > 56) {
        memset(s->block + s->used, 0, 64 - s->used);
        sha1_block(s, s->block);
        s->used = 0;
    }
    memset(s->block + s->used, 0, 56 - s->used);
    for (int i = 0; i < 8; i++) s->block[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha1_block(s, s->block);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(s->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(s->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(s->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)s->h[i];
    }
}

/* uuid5(namespace, "topic/partition/offset") as its 36-character text, with the quotes:
 * the event id of schemas.messages.event_id. */
static int put_event_id(Buf *b, const unsigned char ns[16], const char *topic, Py_ssize_t topic_len,
                        long long partition, long long offset) {
    static const char hex[] = "0123456789abcdef";
    char tail[50];
    int n = 0;
    tail[n++] = '/';
    n += write_int(tail + n, partition);
    tail[n++] = '/';
    n += write_int(tail + n, offset);
    Sha1 s;
    unsigned char d[20];
    sha1_init(&s);
    sha1_update(&s, ns, 16);
    sha1_update(&s, (const unsigned char *)topic, (size_t)topic_len);
    sha1_update(&s, (const unsigned char *)tail, (size_t)n);
    sha1_final(&s, d);
    d[6] = (unsigned char)((d[6] & 0x0F) | 0x50); /* version 5 */
    d[8] = (unsigned char)((d[8] & 0x3F) | 0x80); /* RFC 4122 variant */
    if (buf_reserve(b, 38) < 0) return -1;
    char *out = b->data + b->len;
    *out++ = '"';
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *out++ = '-';
        *out++ = hex[d[i] >> 4];
        *out++ = hex[d[i] & 15];
    }
    *out++ = '"';
    b->len = out - b->data;
    return 0;
}

/* ---- reading the batch -------------------------------------------------------------- */

static PyObject *s_record, *s_source_id, *s_beat_time_ms, *s_beat_id, *s_label, *s_topic, *s_partition,
    *s_offset, *s_timestamp;

/* A column of floats as orjson wrote it for the whole batch ("[0.1,null,2e-7]"): orjson's
 * shortest round-trip formatting costs ~30 ns a number, CPython's dtoa ~500 ns. */
typedef struct {
    const char *p, *end;
} Numbers;

static int numbers_open(Numbers *c, const char *data, Py_ssize_t len, Py_ssize_t n, const char *what) {
    Py_ssize_t commas = 0;
    for (Py_ssize_t i = 0; i < len; i++) commas += data[i] == ',';
    if (len < 2 || data[0] != '[' || data[len - 1] != ']' || (n ? commas != n - 1 || len == 2 : len != 2)) {
        PyErr_Format(PyExc_ValueError, "%s must be a JSON array of %zd numbers", what, n);
        return -1;
    }
    c->p = data + 1;
    c->end = data + len - 1;
    return 0;
}

/* The next number's text (the opening already checked there are as many as beats). */
static int put_next_number(Buf *b, Numbers *c) {
    const char *start = c->p;
    while (c->p < c->end && *c->p != ',') c->p++;
    int rc = buf_put(b, start, c->p - start);
    c->p++;
    return rc;
}

/* A 1-D contiguous, aligned int64 array of n items. */
static int get_ints(PyObject *obj, Py_buffer *view, Py_ssize_t n, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (view->ndim != 1 || view->itemsize != 8 || view->shape[0] != n || (strcmp(f, "l") && strcmp(f, "q")) ||
        (uintptr_t)view->buf % _Alignof(int64_t)) {
        PyErr_Format(PyExc_ValueError, "%s must be %zd int64", what, n);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int get_ll(PyObject *obj, PyObject *name, long long *out) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* A field holding a str, or None (then left out of the event). */
static int put_optional(Buf *b, PyObject *beat, PyObject *name, const char *key, Py_ssize_t key_len) {
    PyObject *v = PyObject_GetAttr(beat, name);
    if (v == NULL) return -1;
    int rc = 0;
    if (v != Py_None) rc = buf_put(b, key, key_len) < 0 || put_string(b, v, PyUnicode_AsUTF8(name)) < 0 ? -1 : 0;
    Py_DECREF(v);
    return rc;
}

enum { SCORE, RATIO, SHARE, PEAK_ERROR, FLOATS };
enum { WINDOW_START, WINDOW_END, PEAK, INTS };

typedef struct {
    Numbers floats[FLOATS];
    const int64_t *ints[INTS];
    const char *shared;
    Py_ssize_t shared_len;
    const unsigned char *ns;
} Batch;

/* The event of beat i into b; its key (the source id's UTF-8) into *key. */
static int put_event(Buf *b, Batch *batch, PyObject *beat, Py_ssize_t i, PyObject *severity, PyObject **key) {
    PyObject *record = NULL, *topic = NULL, *source = NULL;
    long long partition, offset, timestamp, beat_time;
    Py_ssize_t topic_len;
    const char *topic_utf8;
    int rc = -1;
    if ((record = PyObject_GetAttr(beat, s_record)) == NULL || (topic = PyObject_GetAttr(record, s_topic)) == NULL ||
        (source = PyObject_GetAttr(beat, s_source_id)) == NULL)
        goto done;
    if (get_ll(record, s_partition, &partition) < 0 || get_ll(record, s_offset, &offset) < 0 ||
        get_ll(record, s_timestamp, &timestamp) < 0 || get_ll(beat, s_beat_time_ms, &beat_time) < 0)
        goto done;
    if (!PyUnicode_Check(topic)) {
        PyErr_SetString(PyExc_TypeError, "record.topic must be a str");
        goto done;
    }
    if ((topic_utf8 = PyUnicode_AsUTF8AndSize(topic, &topic_len)) == NULL) goto done;
    if (!PyUnicode_Check(source)) {
        PyErr_Format(PyExc_TypeError, "source_id must be a str, not %.100s", Py_TYPE(source)->tp_name);
        goto done;
    }
    Py_ssize_t source_len;
    const char *source_utf8 = PyUnicode_AsUTF8AndSize(source, &source_len);
    if (source_utf8 == NULL || (*key = PyBytes_FromStringAndSize(source_utf8, source_len)) == NULL) goto done;

    if (PUT_LIT(b, "{\"event_id\":") < 0 || put_event_id(b, batch->ns, topic_utf8, topic_len, partition, offset) < 0 ||
        PUT_LIT(b, ",\"source_id\":") < 0 || put_utf8_string(b, source_utf8, source_len) < 0 ||
        PUT_LIT(b, ",\"beat_time\":") < 0 || put_iso_time(b, beat_time) < 0 || PUT_LIT(b, ",\"score\":") < 0 ||
        put_next_number(b, &batch->floats[SCORE]) < 0 || PUT_LIT(b, ",\"ratio\":") < 0 ||
        put_next_number(b, &batch->floats[RATIO]) < 0 || PUT_LIT(b, ",\"severity\":") < 0 ||
        put_string(b, severity, "severity") < 0 || buf_put(b, batch->shared, batch->shared_len) < 0 ||
        PUT_LIT(b, ",\"input\":{\"topic\":") < 0 || put_utf8_string(b, topic_utf8, topic_len) < 0 ||
        PUT_LIT(b, ",\"partition\":") < 0 || put_int(b, partition) < 0 || PUT_LIT(b, ",\"offset\":") < 0 ||
        put_int(b, offset) < 0 || PUT_LIT(b, ",\"timestamp\":") < 0 || put_int(b, timestamp) < 0 ||
        PUT_LIT(b, "},\"error_location\":{\"window_start\":") < 0 || put_int(b, batch->ints[WINDOW_START][i]) < 0 ||
        PUT_LIT(b, ",\"window_end\":") < 0 || put_int(b, batch->ints[WINDOW_END][i]) < 0 ||
        PUT_LIT(b, ",\"window_share\":") < 0 || put_next_number(b, &batch->floats[SHARE]) < 0 ||
        PUT_LIT(b, ",\"peak_sample\":") < 0 || put_int(b, batch->ints[PEAK][i]) < 0 ||
        PUT_LIT(b, ",\"peak_error\":") < 0 || put_next_number(b, &batch->floats[PEAK_ERROR]) < 0 ||
        PUT_LIT(b, "}") < 0 || put_optional(b, beat, s_beat_id, ",\"beat_id\":", 11) < 0 ||
        put_optional(b, beat, s_label, ",\"label\":", 9) < 0 || PUT_LIT(b, "}") < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(record);
    Py_XDECREF(topic);
    Py_XDECREF(source);
    return rc;
}

PyDoc_STRVAR(anomaly_events_doc,
             "anomaly_events(beats, score, ratio, share, peak_error, window_start, window_end, peak, "
             "severities, shared, namespace, record_type, topic, headers) -> list[record_type]\n\n"
             "One anomaly event record per beat: record_type(topic, key, document, headers, None), the "
             "key being the beat's source id (UTF-8). score, ratio, share and peak_error are JSON arrays "
             "of numbers (bytes, as orjson writes them); window_start, window_end and peak are int64 "
             "arrays; all aligned with beats. shared is the JSON text of the fields every event of the "
             "batch shares, with its leading comma, written after severity; namespace is the event "
             "ids' UUID namespace (16 bytes); record_type a named tuple of five fields.");

/* record_type(topic, key, value, headers, None) without calling Python, as tuple.__new__ builds a
 * subclass's instance; takes the references to key and value, also when it fails. */
static PyObject *out_record(PyTypeObject *type, PyObject *topic, PyObject *key, PyObject *value, PyObject *headers) {
    PyObject *r = type->tp_alloc(type, 5);
    if (r == NULL) {
        Py_DECREF(key);
        Py_DECREF(value);
        return NULL;
    }
    Py_INCREF(topic);
    Py_INCREF(headers);
    Py_INCREF(Py_None);
    PyTuple_SET_ITEM(r, 0, topic);
    PyTuple_SET_ITEM(r, 1, key);
    PyTuple_SET_ITEM(r, 2, value);
    PyTuple_SET_ITEM(r, 3, headers);
    PyTuple_SET_ITEM(r, 4, Py_None);
    return r;
}

static int is_record_type(PyTypeObject *type) {
    if (!PyType_IsSubtype(type, &PyTuple_Type)) return 0;
    PyObject *fields = PyObject_GetAttrString((PyObject *)type, "_fields");
    int ok = fields != NULL && PyTuple_Check(fields) && PyTuple_GET_SIZE(fields) == 5;
    Py_XDECREF(fields);
    PyErr_Clear();
    return ok;
}

static PyObject *anomaly_events(PyObject *self, PyObject *args) {
    (void)self;
    static const char *float_names[FLOATS] = {"score", "ratio", "share", "peak_error"};
    static const char *int_names[INTS] = {"window_start", "window_end", "peak"};
    PyObject *beats, *ints[INTS], *severities, *topic, *headers;
    PyTypeObject *record_type;
    const char *floats[FLOATS];
    Py_ssize_t float_lens[FLOATS], ns_len;
    Batch batch;
    if (!PyArg_ParseTuple(args, "O!y#y#y#y#OOOO!y#y#O!UO:anomaly_events", &PyList_Type, &beats, &floats[SCORE],
                          &float_lens[SCORE], &floats[RATIO], &float_lens[RATIO], &floats[SHARE],
                          &float_lens[SHARE], &floats[PEAK_ERROR], &float_lens[PEAK_ERROR], &ints[WINDOW_START],
                          &ints[WINDOW_END], &ints[PEAK], &PyList_Type, &severities, &batch.shared,
                          &batch.shared_len, &batch.ns, &ns_len, &PyType_Type, &record_type, &topic, &headers))
        return NULL;
    if (ns_len != 16) return PyErr_Format(PyExc_ValueError, "namespace must be 16 bytes");
    if (!is_record_type(record_type)) return PyErr_Format(PyExc_TypeError, "record_type must be a named tuple of 5");
    Py_buffer views[INTS];
    int got = 0;
    PyObject *out = NULL, *beat_items = NULL, *severity_items = NULL;
    Buf b = {NULL, 0, 0};
    /* snapshots: the lists' items stay alive and in place whatever an attribute lookup runs */
    if ((beat_items = PyList_AsTuple(beats)) == NULL || (severity_items = PyList_AsTuple(severities)) == NULL)
        goto done;
    Py_ssize_t n = PyTuple_GET_SIZE(beat_items);
    if (PyTuple_GET_SIZE(severity_items) != n) {
        PyErr_Format(PyExc_ValueError, "severities must be %zd", n);
        goto done;
    }
    for (int k = 0; k < FLOATS; k++)
        if (numbers_open(&batch.floats[k], floats[k], float_lens[k], n, float_names[k]) < 0) goto done;
    for (; got < INTS; got++) {
        if (get_ints(ints[got], &views[got], n, int_names[got]) < 0) goto done;
        batch.ints[got] = views[got].buf;
    }
    if ((out = PyList_New(0)) == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        b.len = 0;
        PyObject *key = NULL, *doc = NULL, *record = NULL;
        if (put_event(&b, &batch, PyTuple_GET_ITEM(beat_items, i), i, PyTuple_GET_ITEM(severity_items, i), &key) == 0 &&
            (doc = PyBytes_FromStringAndSize(b.data, b.len)) != NULL)
            record = out_record(record_type, topic, key, doc, headers); /* takes key and doc */
        else
            Py_XDECREF(key);
        int rc = record == NULL ? -1 : PyList_Append(out, record);
        Py_XDECREF(record);
        if (rc < 0) {
            Py_CLEAR(out);
            goto done;
        }
    }
done:
    while (got-- > 0) PyBuffer_Release(&views[got]);
    Py_XDECREF(beat_items);
    Py_XDECREF(severity_items);
    PyMem_Free(b.data);
    return out;
}

static PyMethodDef methods[] = {
    {"anomaly_events", anomaly_events, METH_VARARGS, anomaly_events_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "worker._events",
                                    "Anomaly event documents of a scored batch, written in C.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__events(void) {
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {{&s_record, "record"},       {&s_source_id, "source_id"}, {&s_beat_time_ms, "beat_time_ms"},
                 {&s_beat_id, "beat_id"},     {&s_label, "label"},         {&s_topic, "topic"},
                 {&s_partition, "partition"}, {&s_offset, "offset"},       {&s_timestamp, "timestamp"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL)
            return NULL;
    return PyModule_Create(&module);
}
