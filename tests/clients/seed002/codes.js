var axios = require('axios');
var FormData = require('form-data');
var data = new FormData();
data.append('phone_number', 'XXXXXXXXX');

var config = {
    method: 'get',
    url: 'https://sms.tinsight.tech/apiv2/smscode/?id=11',
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
