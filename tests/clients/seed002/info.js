var axios = require('axios');
var FormData = require('form-data');
var data = new FormData();

var config = {
    method: 'get',
    url: 'https://sms.tinsinght.tech/apiv2/sms/?id=SMS0000001',
    headers: { 
    'Authorization': 'Token xxxxxxxxxxxxxxxxxxxxxxxxx', 
    },
    data : data
};

axios(config)
.then(function (response) {
    console.log(JSON.stringify(response.data));
})
.catch(function (error) {
    console.log(error);
});
