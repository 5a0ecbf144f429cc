var axios = require('axios');
var FormData = require('form-data');
var data = new FormData();
data.append('phone_number', 'XXXXXXXXX');
data.append('code', 'XXXXXX');

var config = {
    method: 'post',
    url: 'https://sms.tinsight.tech/apiv2/verify_code/',
    headers: { 
    'Authorization': 'Token xxxxxxxxxxxxxxxxxxxxxxxxx'},
    data : data
};

axios(config)
.then(function (response) {
    console.log(JSON.stringify(response.data));
})
.catch(function (error) {
    console.log(error);
});
