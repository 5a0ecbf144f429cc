// The request the npm package `insim` (ArdaryinSIM/insim-node, index.js) makes
// for sendSmsApi / addContactApi: the `request` library, POST, JSON text body,
// to https://www.ardary-sms.com/api/sendSmsSolo and /api/addcontactSolo. The
// package is not on the npm registry, so this is its published request shape,
// with the bodies of its README verbatim.
const request = require('request');
const base = process.argv[2];
function post(path, data) {
  return new Promise((resolve, reject) => request({
    method: 'POST', url: base + path, headers: {'Content-Type': 'application/json'}, body: data,
  }, (error, response) => error ? reject(error) : resolve(response.body)));
}
(async () => {
  var data=JSON.stringify({
    "header": {
      "login": "user@gmail.com",
      "accessKey": "xYGt5Dl9wKvz+#RGGU!PjVB+KfiJAYnh%z4&q7oLL3xHRJ1KiN",
      "mode": "prod",
      "priority": 1
    },
    "messages": [
      {
        "phone_number": "+33612345678",
        "message": "Hi Cassandra, can you confirm our appointement?",
        "url": "https://www.my-link.com/",
        "priorite": 1,
        "date_to_send": "2022-10-29 14:12:10"
      }
    ]
  });
  var contacts=JSON.stringify({
    "header": {
      "login": "user@gmail.com",
      "accessKey": "xYGt5Dl9wKvz+#RGGU!PjVB+KfiJAYnh%z4&q7oLL3xHRJ1KiN"
    },
    "contacts": [
      {
        "first_name": "Joe",
        "last_name": "",
        "phone_number": "654123456",
        "country_code": "FR",
        "email": ""
      }
    ]
  });
  console.log(JSON.stringify({send: JSON.parse(await post('/api/sendSmsSolo', data)),
                              contact: JSON.parse(await post('/api/addcontactSolo', contacts))}));
})();
