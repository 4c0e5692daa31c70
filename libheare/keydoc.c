/* keydoc: placeholder, being written */
