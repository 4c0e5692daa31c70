/* timeutil: placeholder, being written */
