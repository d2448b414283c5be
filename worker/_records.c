/* Records taken from confluent-kafka's messages, and a batch of binary beats read from them, in C.
 *
 * Why C: the loop reads seven fields of every consumed message through method calls and
 * keeps them in a Record; written in Python that was a tenth of the loop thread while a
 * backlog drains. Checking a binary beat and keeping its metadata was as much again
 * (README, "Performance"). Only the CPython C API is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum { TOPIC, PARTITION, OFFSET, TIMESTAMP, KEY, VALUE, HEADERS, FIELDS };

static PyObject *s_error, *s_field[FIELDS];

/* (a, b), taking the references to both. */
static PyObject *pair(PyObject *a, PyObject *b) {
    PyObject *out = PyTuple_Pack(2, a, b);
    Py_DECREF(a);
    Py_DECREF(b);
    return out;
}

/* record_type(topic, partition, offset, timestamp ms, key, value, headers) of one message. The
 * methods are called first: no Python code runs while the record is half filled. */
static PyObject *record_of(PyTypeObject *type, PyObject *message) {
    PyObject *v[FIELDS] = {NULL};
    for (int k = 0; k < FIELDS; k++) {
        if ((v[k] = PyObject_CallMethodNoArgs(message, s_field[k])) == NULL) goto fail;
        if (k == TIMESTAMP) { /* (timestamp type, ms) */
            PyObject *stamp = v[k];
            v[k] = PyTuple_Check(stamp) && PyTuple_GET_SIZE(stamp) == 2 ? Py_NewRef(PyTuple_GET_ITEM(stamp, 1)) : NULL;
            Py_DECREF(stamp);
            if (v[k] == NULL) {
                PyErr_SetString(PyExc_TypeError, "message.timestamp() must be a (type, ms) pair");
                goto fail;
            }
        }
    }
    PyObject *r = type->tp_alloc(type, FIELDS);
    if (r == NULL) goto fail;
    for (int k = 0; k < FIELDS; k++) PyTuple_SET_ITEM(r, k, v[k]);
    return r;
fail:
    for (int k = 0; k < FIELDS; k++) Py_XDECREF(v[k]);
    return NULL;
}

PyDoc_STRVAR(take_doc,
             "take(messages, record_type) -> (records, failed)\n\n"
             "The records of the messages that carry no error, as record_type(topic, partition, offset, "
             "timestamp ms, key, value, headers), a named tuple of seven fields; and the messages that "
             "carry an error, in order.");

static PyObject *take(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *messages, *records = NULL, *failed = NULL;
    PyTypeObject *type;
    if (!PyArg_ParseTuple(args, "O!O!:take", &PyList_Type, &messages, &PyType_Type, &type)) return NULL;
    if (!PyType_IsSubtype(type, &PyTuple_Type))
        return PyErr_Format(PyExc_TypeError, "record_type must be a named tuple of %d", FIELDS);
    PyObject *fields = PyObject_GetAttrString((PyObject *)type, "_fields");
    int ok = fields != NULL && PyTuple_Check(fields) && PyTuple_GET_SIZE(fields) == FIELDS;
    Py_XDECREF(fields);
    if (!ok) {
        PyErr_Clear();
        return PyErr_Format(PyExc_TypeError, "record_type must be a named tuple of %d", FIELDS);
    }
    PyObject *items = PyList_AsTuple(messages); /* a snapshot: a method may run any Python code */
    if (items == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    if ((records = PyList_New(0)) == NULL || (failed = PyList_New(0)) == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *message = PyTuple_GET_ITEM(items, i);
        PyObject *error = PyObject_CallMethodNoArgs(message, s_error);
        if (error == NULL) goto fail;
        int has_error = error != Py_None;
        Py_DECREF(error);
        PyObject *item = has_error ? Py_NewRef(message) : record_of(type, message);
        if (item == NULL) goto fail;
        int rc = PyList_Append(has_error ? failed : records, item);
        Py_DECREF(item);
        if (rc < 0) goto fail;
    }
    Py_DECREF(items);
    return pair(records, failed);
fail:
    Py_DECREF(items);
    Py_XDECREF(records);
    Py_XDECREF(failed);
    return NULL;
}

/* Whether a header key could name the content type (header, ASCII) other than exactly: a different
 * case, or anything not ASCII (str.lower() maps a few other characters to ASCII letters). */
static int maybe_content_type(PyObject *key, PyObject *header) {
    if (!PyUnicode_Check(key) || !PyUnicode_IS_ASCII(key)) return 1;
    Py_ssize_t len = PyUnicode_GET_LENGTH(header);
    if (PyUnicode_GET_LENGTH(key) != len) return 0;
    const char *k = (const char *)PyUnicode_DATA(key), *h = (const char *)PyUnicode_DATA(header);
    for (Py_ssize_t i = 0; i < len; i++)
        if ((k[i] >= 'A' && k[i] <= 'Z' ? k[i] + 32 : k[i]) != h[i]) return 0;
    return 1;
}

/* A plain binary beat: the first content-type header is exactly ours, the value is one beat,
 * the key is UTF-8 and the timestamp a beat time; returns its BeatMeta, else NULL with no
 * error set (the Python decoder decides). */
static PyObject *plain_beat(PyObject *record, PyTypeObject *meta_type, Py_ssize_t beat_bytes, PyObject *header,
                            PyObject *content_type, long long max_time) {
    if (!PyTuple_Check(record) || PyTuple_GET_SIZE(record) != FIELDS) return NULL;
    PyObject *headers = PyTuple_GET_ITEM(record, HEADERS), *value = PyTuple_GET_ITEM(record, VALUE),
             *key = PyTuple_GET_ITEM(record, KEY), *timestamp = PyTuple_GET_ITEM(record, TIMESTAMP);
    if (!PyList_Check(headers) || !PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) != beat_bytes ||
        !PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) == 0 || !PyLong_CheckExact(timestamp))
        return NULL;
    int ours = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *h = PyList_GET_ITEM(headers, i);
        if (!PyTuple_Check(h) || PyTuple_GET_SIZE(h) != 2) return NULL;
        PyObject *name = PyTuple_GET_ITEM(h, 0);
        if (PyUnicode_CheckExact(name) && PyUnicode_Compare(name, header) == 0) {
            PyObject *v = PyTuple_GET_ITEM(h, 1);
            ours = PyBytes_CheckExact(v) && PyBytes_GET_SIZE(v) == PyBytes_GET_SIZE(content_type) &&
                   memcmp(PyBytes_AS_STRING(v), PyBytes_AS_STRING(content_type), PyBytes_GET_SIZE(v)) == 0;
            break;
        }
        if (maybe_content_type(name, header)) return NULL;
    }
    if (!ours) return NULL;
    int overflow;
    long long ms = PyLong_AsLongLongAndOverflow(timestamp, &overflow);
    if (overflow || ms < 0 || ms > max_time) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *source = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), NULL);
    if (source == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *meta = meta_type->tp_alloc(meta_type, 5);
    if (meta == NULL) {
        Py_DECREF(source);
        PyErr_Clear();
        return NULL;
    }
    PyTuple_SET_ITEM(meta, 0, Py_NewRef(record));
    PyTuple_SET_ITEM(meta, 1, source);
    PyTuple_SET_ITEM(meta, 2, Py_NewRef(timestamp));
    PyTuple_SET_ITEM(meta, 3, Py_NewRef(Py_None));
    PyTuple_SET_ITEM(meta, 4, Py_NewRef(Py_None));
    return meta;
}

PyDoc_STRVAR(binary_beats_doc,
             "binary_beats(records, meta_type, beat_bytes, header, content_type, max_time_ms) "
             "-> (metas, values) | None\n\n"
             "When every record is a plain binary beat (a Record whose first header named exactly header "
             "holds exactly content_type, beat_bytes of value, a UTF-8 key, a timestamp in 0..max_time_ms): "
             "their metadata, meta_type(record, source id, timestamp, None, None), and their values. "
             "Otherwise None: the caller decodes the batch record by record (the dead-letter reasons).");

static PyObject *binary_beats(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *records, *header, *content_type, *metas = NULL, *values = NULL;
    PyTypeObject *meta_type;
    Py_ssize_t beat_bytes;
    long long max_time;
    if (!PyArg_ParseTuple(args, "O!O!nUSL:binary_beats", &PyList_Type, &records, &PyType_Type, &meta_type,
                          &beat_bytes, &header, &content_type, &max_time))
        return NULL;
    if (!PyType_IsSubtype(meta_type, &PyTuple_Type))
        return PyErr_Format(PyExc_TypeError, "meta_type must be a named tuple of 5");
    if (!PyUnicode_IS_ASCII(header) || beat_bytes <= 0) Py_RETURN_NONE; /* not a case for the short cut */
    PyObject *items = PyList_AsTuple(records); /* a snapshot, as in take() */
    if (items == NULL) return NULL;
    if ((metas = PyList_New(0)) == NULL || (values = PyList_New(0)) == NULL) goto fail;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(items); i++) {
        PyObject *record = PyTuple_GET_ITEM(items, i);
        PyObject *meta = plain_beat(record, meta_type, beat_bytes, header, content_type, max_time);
        if (meta == NULL) {
            Py_DECREF(items);
            Py_DECREF(metas);
            Py_DECREF(values);
            Py_RETURN_NONE;
        }
        int rc = PyList_Append(metas, meta);
        Py_DECREF(meta);
        if (rc < 0 || PyList_Append(values, PyTuple_GET_ITEM(record, VALUE)) < 0) goto fail;
    }
    Py_DECREF(items);
    return pair(metas, values);
fail:
    Py_DECREF(items);
    Py_XDECREF(metas);
    Py_XDECREF(values);
    return NULL;
}

static PyMethodDef methods[] = {
    {"take", take, METH_VARARGS, take_doc},
    {"binary_beats", binary_beats, METH_VARARGS, binary_beats_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "worker._records",
                                    "Records taken from confluent-kafka's messages, and binary beats read from them, in C.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__records(void) {
    static const char *names[FIELDS] = {"topic", "partition", "offset", "timestamp", "key", "value", "headers"};
    if (s_error == NULL && (s_error = PyUnicode_InternFromString("error")) == NULL) return NULL;
    for (int k = 0; k < FIELDS; k++)
        if (s_field[k] == NULL && (s_field[k] = PyUnicode_InternFromString(names[k])) == NULL) return NULL;
    return PyModule_Create(&module);
}
