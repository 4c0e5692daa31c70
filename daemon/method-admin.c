/* method-admin: placeholder, being written */
