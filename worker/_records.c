/* Records taken from confluent-kafka's messages, in C.
 *
 * Why C: the loop reads seven fields of every consumed message through method calls and
 * keeps them in a Record; written in Python that was a tenth of the loop thread while a
 * backlog drains, about what the decoding of a binary beat costs (README, "Performance").
 * Only the CPython C API is used: the messages are asked through their Python methods.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

enum { TOPIC, PARTITION, OFFSET, TIMESTAMP, KEY, VALUE, HEADERS, FIELDS };

static PyObject *s_error, *s_field[FIELDS];

/* record_type(topic, partition, offset, timestamp ms, key, value, headers) of one message. */
static PyObject *record_of(PyTypeObject *type, PyObject *message) {
    PyObject *r = type->tp_alloc(type, FIELDS);
    if (r == NULL) return NULL;
    for (int k = 0; k < FIELDS; k++) {
        PyObject *v = PyObject_CallMethodNoArgs(message, s_field[k]);
        if (v != NULL && k == TIMESTAMP) { /* (timestamp type, ms) */
            PyObject *ms = PyTuple_Check(v) && PyTuple_GET_SIZE(v) == 2 ? PyTuple_GET_ITEM(v, 1) : NULL;
            Py_XINCREF(ms);
            Py_DECREF(v);
            v = ms;
            if (v == NULL) PyErr_SetString(PyExc_TypeError, "message.timestamp() must be a (type, ms) pair");
        }
        if (v == NULL) {
            Py_DECREF(r); /* the fields set so far go with it; the rest are NULL */
            return NULL;
        }
        PyTuple_SET_ITEM(r, k, v);
    }
    return r;
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
    Py_ssize_t n = PyList_GET_SIZE(messages);
    if ((records = PyList_New(0)) == NULL || (failed = PyList_New(0)) == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *message = PyList_GET_ITEM(messages, i);
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
    PyObject *out = PyTuple_Pack(2, records, failed);
    Py_DECREF(records);
    Py_DECREF(failed);
    return out;
fail:
    Py_XDECREF(records);
    Py_XDECREF(failed);
    return NULL;
}

static PyMethodDef methods[] = {
    {"take", take, METH_VARARGS, take_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "worker._records",
                                    "Records taken from confluent-kafka's messages, in C.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__records(void) {
    static const char *names[FIELDS] = {"topic", "partition", "offset", "timestamp", "key", "value", "headers"};
    if (s_error == NULL && (s_error = PyUnicode_InternFromString("error")) == NULL) return NULL;
    for (int k = 0; k < FIELDS; k++)
        if (s_field[k] == NULL && (s_field[k] = PyUnicode_InternFromString(names[k])) == NULL) return NULL;
    return PyModule_Create(&module);
}
