/* conf: placeholder, being written */
