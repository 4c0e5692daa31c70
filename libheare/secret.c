/* secret: placeholder, being written */
